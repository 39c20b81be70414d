"""The in-memory list: SuppressionIndex over the compiled core, its scope table, huge pages."""

from anning.index.scopetable import NO_SCOPE, ScopeTable
from anning.index.statements import RowStatements
from anning.index.suppression import UNKNOWN_SENDER, IndexArrays, SuppressionIndex

__all__ = ["NO_SCOPE", "UNKNOWN_SENDER", "IndexArrays", "RowStatements", "ScopeTable",
           "SuppressionIndex"]
