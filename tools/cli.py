"""`bandwagon <command>`: one console command, so one image can run any service."""

from __future__ import annotations

import argparse
import importlib
import sys

from libs.errors import ConfigError

COMMANDS = {
    "ingest": ("services.ingest.main", "market data -> Redis streams"),
    "strategy": ("services.strategy.main", "Bollinger signals -> paper orders and fills"),
    "accounting": ("services.accounting.main", "fills -> status hashes and refreshes"),
    "gateway": ("services.gateway.main", "websocket Status API"),
    "notify": ("services.notify.main", "fills -> signed webhooks and Telegram ('test --bot ID')"),
    "run": ("tools.run.supervisor", "the whole demo: Redis and the five services"),
    "watch": ("tools.watch", "a websocket client printing a bot's refreshes"),
    "reset": ("tools.reset", "delete one bot's state to start it over"),
    "backtest": ("tools.backtest.main", "the live trading core over a klines/trades file"),
    "download": ("tools.download.main", "exchange klines history -> a klines CSV (CCXT)"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="bandwagon", description=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to run")
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<11} {summary}")
        return 0 if args else 2
    command = parser.parse_args(args[:1]).command
    module = importlib.import_module(COMMANDS[command][0])
    try:
        code: int = module.main(args[1:])
    except ConfigError as error:
        print(error, file=sys.stderr)  # SPEC 4.1 rule 7: one line, exit 78
        return ConfigError.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
