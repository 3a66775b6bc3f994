"""Rendezvous assignment of partitions to replicas: every replica computes the same split from
the same member list, and a member joining or leaving moves only its own share."""

from __future__ import annotations

from libs.store.partitions import PartitionId, assigned_to, owner_of

PARTITIONS = [PartitionId(f"bot-{b}", f"strategy:SYM-{s}") for b in range(10) for s in range(10)]


def split(members: list[str]) -> dict[str, set[PartitionId]]:
    return {member: assigned_to(member, PARTITIONS, members) for member in members}


def test_every_partition_has_exactly_one_owner_among_the_members() -> None:
    members = ["strategy-a", "strategy-b", "strategy-c"]
    shares = split(members)
    owned = [p for share in shares.values() for p in share]
    assert sorted(owned) == sorted(PARTITIONS)
    assert all(share for share in shares.values()), "100 partitions over 3 members: none idle"


def test_the_split_does_not_depend_on_the_order_members_are_listed_in() -> None:
    assert split(["a", "b", "c"]) == split(["c", "a", "b"])


def test_a_member_leaving_moves_only_its_own_partitions() -> None:
    before = split(["a", "b", "c"])
    after = split(["a", "b"])
    assert before["a"] <= after["a"] and before["b"] <= after["b"]
    assert after["a"] | after["b"] == set(PARTITIONS)


def test_a_member_joining_takes_partitions_only_from_the_others_never_between_them() -> None:
    before = split(["a", "b"])
    after = split(["a", "b", "c"])
    assert after["a"] <= before["a"] and after["b"] <= before["b"]
    assert 10 < len(after["c"]) < 60, "about a third, by hashing"


def test_a_member_not_yet_in_the_list_counts_itself_and_no_member_means_no_owner() -> None:
    partition = PARTITIONS[0]
    assert assigned_to("a", [partition], []) == {partition}
    assert owner_of(partition, []) is None


def test_a_bot_key_names_its_bot_back() -> None:
    from libs.store import keys

    for bot in ("demo", "a", "bot-7-x"):
        for key in (keys.events(bot), keys.status(bot), keys.symbol(bot, "ETH-USDT")):
            assert keys.bot_of(key) == bot
    assert keys.bot_of("bw:{alpha}:events") == "alpha"
