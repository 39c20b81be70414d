"""Everything on disk: the data directory's layout and file layer, the write log and its
records, recovery, the events checkpoint and the binary snapshot."""
