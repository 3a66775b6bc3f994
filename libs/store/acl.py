"""A Redis ACL user per service (SPEC 4.1 rule 14), derived from the key schema.

`ACCESS` says, for every key function of `libs.store.keys`, which service reads and which writes
it; a test fails when a key function is missing here, so a new key cannot be forgotten. Each
user is allowed its keys, its channels and the commands of its job, nothing else: the gateway,
which faces the internet, runs read commands only, on the published layout, the refresh log and
the key registry, and may subscribe to refresh channels; it can write nothing.

`users_file` renders them in Redis's own users-file format (`aclfile`). Redis 7 tells keys a user
may only read (`%R~`) from keys it may write (`~`); Redis 6.2 has no such rule, so there a
pattern a service only reads is rendered as `~` too, and a service may write the keys it reads
(still not the keys of other jobs, and never with a command outside its list). The file in the
repository (deploy/redis-users.acl, `make acl`) is the Redis 7 one, without passwords: a
deployment adds each user's password (`>...` or `#<sha256>`) from its Secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from libs.store import keys

Access = Literal["read", "write"]
SERVICES = ("ingest", "strategy", "accounting", "notify", "gateway")
USERS = (*SERVICES, "inspector", "admin")
ANY = "*"


def _every(function: Callable[..., str], *arguments: str) -> str:
    """The glob of every key a key function makes: its arguments replaced by `*`."""
    return function(*arguments)


# Every key function of libs.store.keys: who reads it and who writes it. Partitioned workers'
# leases, fences and membership are split by service, so one worker cannot take another's.
ACCESS: dict[str, dict[str, Access]] = {
    _every(keys.market_stream, ANY, ANY, ANY): {"ingest": "write", "strategy": "read"},
    _every(keys.market_terms, ANY, ANY): {"ingest": "write", "accounting": "read"},
    keys.api_keys(): {"accounting": "write", "gateway": "read"},
    _every(keys.meta, ANY): {
        "accounting": "write",
        "strategy": "write",  # the plug-in's frozen parameters (SPEC 3.2 rule 1)
        "gateway": "read",
        "ingest": "read",  # the ccxt source warns when an exchange changes frozen terms
        "notify": "read",  # `bandwagon notify test`: the epoch
    },
    _every(keys.status, ANY): {"accounting": "write", "gateway": "read"},
    _every(keys.symbol, ANY, ANY): {"accounting": "write", "gateway": "read"},
    _every(keys.klines, ANY, ANY): {"accounting": "write", "gateway": "read"},
    _every(keys.trades, ANY, ANY): {"accounting": "write", "gateway": "read"},
    _every(keys.refresh_log, ANY): {"accounting": "write", "gateway": "read"},
    _every(keys.events, ANY): {"strategy": "write", "accounting": "write"},  # accounting trims
    _every(keys.strategy_state, ANY, ANY): {"strategy": "write"},
    _every(keys.accounting_state, ANY): {"accounting": "write"},
    _every(keys.notify_feed, ANY): {"accounting": "write", "notify": "write"},  # notify trims
    _every(keys.notify_state, ANY): {"notify": "write"},
    _every(keys.deliveries, ANY, ANY): {"notify": "write"},
    _every(keys.lease, ANY, "strategy:*"): {"strategy": "write"},
    _every(keys.fence, ANY, "strategy:*"): {"strategy": "write"},
    _every(keys.lease, ANY, "accounting"): {"accounting": "write"},
    _every(keys.fence, ANY, "accounting"): {"accounting": "write"},
    _every(keys.lease, ANY, "notify"): {"notify": "write"},
    _every(keys.fence, ANY, "notify"): {"notify": "write"},
    _every(keys.commits, ANY): {"strategy": "write", "accounting": "write", "notify": "write"},
    _every(keys.members, "strategy"): {"strategy": "write"},
    _every(keys.members, "accounting"): {"accounting": "write"},
    _every(keys.members, "notify"): {"notify": "write"},
}

KEY_FUNCTIONS_COVERED = (
    "market_stream market_terms api_keys meta status symbol klines trades refresh_log events "
    "strategy_state accounting_state notify_feed notify_state deliveries lease fence commits "
    "members refresh_channel"
).split()
"""The key functions `ACCESS` and `CHANNELS` cover; the test compares it with libs.store.keys."""

CHANNELS: dict[str, dict[str, Access]] = {
    _every(keys.refresh_channel, ANY): {"accounting": "write", "gateway": "read"},
}

# Commands. Every user may connect and name itself. Not CLIENT SETINFO, which redis-py sends at
# connect and whose refusal it shrugs off: Redis 7.0 does not know it, and a users file naming
# it would not load there (6.2 takes unknown subcommands, 7.0 refuses them).
_CONNECTION = (
    "+ping +hello +select +echo +reset +readonly +client|setname +client|getname +client|id "
    "+cluster|slots +cluster|shards +cluster|myid +command|docs"
)
_WORKER = (
    "-@all +@read +@write +@stream +@hash +@list +@sortedset +@string +@transaction "
    "+evalsha +eval +script|load +script|exists -@dangerous -scan -randomkey +info +time "
    # appendfsync, to tell a restart that cannot have lost writes (SPEC 2.1 rule 19); it also
    # shows other settings, so the gateway, which faces the internet, does not get it
    "+config|get"
)
_READ_ONLY = "-@all +@read -@dangerous -scan -randomkey -keys +multi +exec +discard"
_SUBSCRIBER = "+subscribe +ssubscribe +unsubscribe +sunsubscribe"

REDIS_7_COMMANDS = frozenset({"+spublish", "+ssubscribe", "+sunsubscribe"})
"""Sharded pub/sub, which only a Redis Cluster (7.0 or newer) uses: Redis 6.2 does not know the
commands, and a users file naming them does not load."""

COMMANDS: dict[str, str] = {
    "ingest": f"{_WORKER} {_CONNECTION}",
    "strategy": f"{_WORKER} {_CONNECTION}",
    "accounting": f"{_WORKER} +publish +spublish {_CONNECTION}",
    "notify": f"{_WORKER} {_CONNECTION}",
    "gateway": f"{_READ_ONLY} {_SUBSCRIBER} {_CONNECTION}",
    # for redis-cli: every key and channel, read commands, SCAN to find keys, INFO, no write
    "inspector": f"{_READ_ONLY} +scan +info +psubscribe +punsubscribe {_SUBSCRIBER} {_CONNECTION}",
    "admin": "+@all",  # `bandwagon reset`, and an operator's repairs
}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    keys: tuple[tuple[str, Access], ...]
    channels: tuple[str, ...]
    commands: str

    def rules(self, *, redis_major: int) -> str:
        """The user's rules, without a password: `on`, its key patterns (read-only ones as
        `%R~` on Redis 7), its channels, its commands."""
        parts = ["on", "resetkeys", "resetchannels"]
        for pattern, access in self.keys:
            read_only = access == "read" and redis_major >= 7
            parts.append(f"{'%R~' if read_only else '~'}{pattern}")
        parts += [f"&{channel}" for channel in self.channels]
        parts += [
            rule
            for rule in self.commands.split()
            if redis_major >= 7 or rule not in REDIS_7_COMMANDS
        ]
        return " ".join(parts)


def user(name: str) -> User:
    if name in ("inspector", "admin"):
        return User(
            name, (("*", "read" if name == "inspector" else "write"),), ("*",), COMMANDS[name]
        )
    return User(
        name,
        tuple((pattern, access[name]) for pattern, access in ACCESS.items() if name in access),
        tuple(pattern for pattern, access in CHANNELS.items() if name in access),
        COMMANDS[name],
    )


def password_rule(password: str) -> str:
    """A password as the users file keeps it: its SHA-256, never the password itself."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def users_file(
    passwords: Mapping[str, str] | None = None,
    *,
    redis_major: int = 7,
    default_user: bool = False,
) -> str:
    """The users file: every user of `USERS`; with `passwords`, each with its password's hash.
    The default user is switched off unless `default_user` (the quick start of docs/security.md
    keeps it, and no users file at all)."""
    # a users file takes no comments: docs/security.md says what this one is
    lines = [
        "user default on nopass ~* &* +@all"
        if default_user
        else "user default off resetkeys -@all",
    ]
    for name in USERS:
        rules = user(name).rules(redis_major=redis_major)
        if passwords is not None:
            rules = f"{rules} {password_rule(passwords[name])}"
        lines.append(f"user {name} {rules}")
    return "\n".join(lines) + "\n"
