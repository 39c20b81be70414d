"""Replies to opt-out keywords (SPEC §4): a table of what users write, and what it means."""

import time

import pytest

from anning import Scope, SuppressionIndex
from anning.engine import Engine
from anning.model.replies import OPT_IN, OPT_OUT, OPT_OUT_GLOBAL, recognise_reply

NONE = "none"

REPLIES = [
    # the keywords, as written
    ("T", OPT_OUT), ("TD", OPT_OUT), ("N", OPT_OUT), ("0000", OPT_OUT), ("退订", OPT_OUT),
    ("取消", OPT_OUT), ("拒收", OPT_OUT), ("STOP", OPT_OUT), ("UNSUBSCRIBE", OPT_OUT),
    ("CANCEL", OPT_OUT), ("END", OPT_OUT), ("QUIT", OPT_OUT), ("OPTOUT", OPT_OUT),
    ("REVOKE", OPT_OUT), ("STOPALL", OPT_OUT_GLOBAL), ("全部退订", OPT_OUT_GLOBAL),
    ("START", OPT_IN), ("UNSTOP", OPT_IN),
    # case and width
    ("td", OPT_OUT), ("Td", OPT_OUT), ("ＴＤ", OPT_OUT), ("ｔｄ", OPT_OUT), ("ＳＴＯＰ", OPT_OUT),
    ("stop", OPT_OUT), ("Stop", OPT_OUT), ("０００００"[:4], OPT_OUT), ("stopall", OPT_OUT_GLOBAL),
    ("Start", OPT_IN), ("ｕｎｓｔｏｐ", OPT_IN),
    # surrounding punctuation and space
    ("TD!", OPT_OUT), (" td ", OPT_OUT), ("【退订】", OPT_OUT), ("退订。", OPT_OUT),
    ("退订！", OPT_OUT), ("“退订”", OPT_OUT), ("STOP.", OPT_OUT), ("...stop...", OPT_OUT),
    ("退 订", OPT_OUT), ("opt-out", OPT_OUT), ("opt out", OPT_OUT), ("TD~", OPT_OUT),
    ("\t退订\n", OPT_OUT),
    # politeness before and after
    ("退订谢谢", OPT_OUT), ("退订，谢谢！", OPT_OUT), ("请退订", OPT_OUT), ("请退订谢谢", OPT_OUT),
    ("Stop. Thank you", OPT_OUT), ("stop thanks", OPT_OUT), ("Unsubscribe please", OPT_OUT),
    ("please stop", OPT_OUT), ("TD 谢谢", OPT_OUT), ("取消，麻烦了", OPT_OUT),
    ("全部退订，谢谢", OPT_OUT_GLOBAL), ("START please", OPT_IN), ("麻烦退订", OPT_OUT),
    # free text that must not count
    ("不要退订", NONE), ("T恤还有吗", NONE), ("stop by tomorrow?", NONE), ("谢谢", NONE),
    ("thanks", NONE), ("", NONE), ("   ", NONE), ("？", NONE), ("好的", NONE),
    ("我不想退订", NONE), ("怎么退订", NONE), ("退订了吗", NONE), ("TDD", NONE), ("TT", NONE),
    ("don't stop", NONE), ("stopped", NONE), ("start over", NONE), ("退款", NONE),
    ("取消订单", NONE), ("N/A", NONE), ("00000", NONE), ("no", NONE), ("end of story", NONE),
    ("STOP STOP", NONE), ("请问", NONE), ("1", NONE),
]


def test_the_table_is_large_enough():
    assert len(REPLIES) >= 60
    assert sum(1 for _, action in REPLIES if action == NONE) >= 20


@pytest.mark.parametrize(("text", "action"), REPLIES)
def test_reply(text, action):
    assert recognise_reply(text).action == action


def test_not_text_is_free_text():
    assert recognise_reply(None).action == NONE  # type: ignore[arg-type]
    assert recognise_reply(b"TD").action == NONE  # type: ignore[arg-type]


@pytest.fixture()
def engine(tmp_path):
    index = SuppressionIndex.build(["13000000000"], ["other"],
                                   entities={"京东": "京东集团", "京东超市": "京东集团"},
                                   meta={"as_of_ms": 1_700_000_000_000})
    return Engine(index, data_dir=tmp_path)


def test_an_opt_out_reply_covers_the_senders_entity(engine):
    outcome = engine.reply("【京东】", "13812345678", "退订谢谢")
    assert outcome.recognised and outcome.scope == "entity:京东集团" and outcome.sequence > 0
    assert engine.check("京东超市", "13812345678") is Scope.ENTITY
    assert engine.check("淘宝", "13812345678") is Scope.NONE


def test_a_reply_to_a_sender_without_an_entity_covers_the_sender(engine):
    outcome = engine.reply("淘宝", "13812345678", "TD")
    assert outcome.scope == "淘宝"
    assert engine.check("淘宝", "13812345678") is Scope.SENDER
    assert engine.check("天猫", "13812345678") is Scope.NONE


def test_global_replies_and_opting_back_in(engine):
    engine.reply("淘宝", "13812345678", "全部退订")
    assert engine.check("anyone", "13812345678") is Scope.GLOBAL
    now = int(time.time() * 1000)
    engine.reply("京东", "13912345678", "TD", at_ms=now - 60_000)
    engine.reply("京东", "13912345678", "START", at_ms=now - 30_000)
    assert engine.check("京东", "13912345678") is Scope.NONE
    # An older opt-out arriving late does not undo the later opt-in.
    engine.reply("京东", "13912345678", "退订", at_ms=now - 45_000)
    assert engine.check("京东", "13912345678") is Scope.NONE


def test_free_text_changes_nothing(engine, tmp_path):
    size = engine.source.size()
    for text in ("不要退订", "T恤还有吗", "stop by tomorrow?"):
        outcome = engine.reply("淘宝", "13812345678", text)
        assert not outcome.recognised and outcome.event is None
    assert engine.check("淘宝", "13812345678") is Scope.NONE
    assert engine.source.size() == size
