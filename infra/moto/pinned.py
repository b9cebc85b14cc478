"""The moto version the speed fixes in infra/moto/ were written for (pinned in
infra/requirements.txt). Each fix refuses to load on another version: compare it with moto's
code it replaces, then update it and this pin together."""

import moto

WRITTEN_FOR = "5.2.1"


def require(fix: str, replaces: str) -> None:
    if moto.__version__ != WRITTEN_FOR:
        raise SystemExit(
            f"infra/moto/{fix} was written for moto {WRITTEN_FOR}, found {moto.__version__}: "
            f"compare it with moto's {replaces}, then update it"
        )
