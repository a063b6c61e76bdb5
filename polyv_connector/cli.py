"""``polyv-sync``: the command line over :func:`polyv_connector.sync`.

Exit status: 0 every item sent, unchanged, duplicate, rejected or dry-run; 1 some items
``failed`` or ``not_attempted``; 2 bad configuration, input or state (nothing sent);
3 POLYV stopped the run (credentials, clock, IP block); 4 a data-quality gate failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from polyv_connector import exit_codes
from polyv_connector.config import ColumnMapping, Credentials, SendOptions, SyncOptions
from polyv_connector.errors import ConfigError, PolyvConnectorError, StateError
from polyv_connector.model import FIELD_ID, MAX_BATCH_SIZE, VALUE, VIEWER_ID


def _field_mapping(values: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for raw in values:
        field_id, sep, column = raw.partition("=")
        if not sep or not field_id.strip() or not column.strip():
            raise ConfigError("--field", f"expected FIELD_ID=COLUMN, got {raw!r}")
        if field_id.strip() in mapping:
            raise ConfigError("--field", f"customFieldId {field_id.strip()!r} is mapped twice")
        mapping[field_id.strip()] = column.strip()
    return mapping


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="Parquet file, directory or URL (s3://, gs://, memory://...)")
    p.add_argument("--report", required=True, help="where to write the per-item report (Parquet)")
    p.add_argument("--summary-json", help="also write the JSON summary to this file")
    g = p.add_argument_group("columns")
    g.add_argument("--viewer-id-column", default=VIEWER_ID)
    g.add_argument("--field-id-column", default=FIELD_ID, help="long form: column holding customFieldId")
    g.add_argument("--value-column", default=VALUE, help="long form: column holding customFieldValue")
    g.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="FIELD_ID=COLUMN",
        help="wide form: send COLUMN as customFieldId FIELD_ID (repeatable)",
    )
    s = p.add_argument_group("sending")
    s.add_argument("--batch-size", type=int, default=MAX_BATCH_SIZE, help="items per request (max 1000)")
    s.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    s.add_argument(
        "--max-rps",
        type=float,
        default=100.0,
        help="requests per second for this run (POLYV blocks an IP past 1500 per 10 s)",
    )
    s.add_argument("--max-attempts", type=int, default=5, help="tries per request on transient errors")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    s.add_argument("--signature-method", choices=["MD5", "SHA256"], default="MD5")
    s.add_argument(
        "--no-check-fields",
        dest="check_fields",
        action="store_false",
        help="skip the preflight check of customFieldIds against the account's field list",
    )
    r = p.add_argument_group("run")
    r.add_argument("--dry-run", action="store_true", help="plan and report, send nothing")
    r.add_argument("--state-dir", help="keep the sync state here; unchanged items are not resent")
    r.add_argument("--full-refresh", action="store_true", help="ignore the state and send everything")
    r.add_argument(
        "--reset-state",
        action="store_true",
        help="if the state is corrupt or from another fingerprint version, start over",
    )
    r.add_argument(
        "--expectations",
        metavar="SUITE.json",
        help="Great Expectations suite (JSON) to validate the items with; 'default' for the bundled one",
    )
    r.add_argument(
        "--max-rejected-fraction",
        type=float,
        default=None,
        help="a gate: send nothing if a larger share of the items is rejected (default 0.05 with "
        "--expectations, no ceiling otherwise)",
    )
    r.add_argument("--read-batch-rows", type=int, default=65_536, help=argparse.SUPPRESS)
    r.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)


def options_from_args(args: argparse.Namespace) -> SyncOptions:
    fields = _field_mapping(args.field)
    mapping = (
        ColumnMapping.wide(args.viewer_id_column, fields)
        if fields
        else ColumnMapping(args.viewer_id_column, args.field_id_column, args.value_column)
    )
    max_rejected = args.max_rejected_fraction
    if max_rejected is None and args.expectations:
        # A suite is how a team says what a good table looks like: with it comes the gate that
        # stops a broken upstream table from overwriting good data. Without one, rejected rows
        # (often null values of a wide table) are reported, not a reason to stop.
        max_rejected = 0.05
    return SyncOptions(
        send=SendOptions(
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            max_rps=args.max_rps,
            max_attempts=args.max_attempts,
            timeout_s=args.timeout,
            signature_method=args.signature_method,
        ),
        mapping=mapping,
        dry_run=args.dry_run,
        full_refresh=args.full_refresh,
        check_fields=args.check_fields,
        state_dir=args.state_dir,
        reset_corrupt_state=args.reset_state,
        max_rejected_fraction=max_rejected,
        expectations_path=args.expectations,
        read_batch_rows=args.read_batch_rows,
    )


def _setting_name(setting: str) -> str:
    """Map an option's internal name to the flag a CLI user typed."""
    return {
        "batch_size": "--batch-size",
        "concurrency": "--concurrency",
        "max_rps": "--max-rps",
        "max_attempts": "--max-attempts",
        "timeout": "--timeout",
        "max_rejected_fraction": "--max-rejected-fraction",
    }.get(setting, setting)


def cmd_run(args: argparse.Namespace) -> int:
    from polyv_connector.engine import sync
    from polyv_connector.report import ParquetReport
    from polyv_connector.sources.parquet import ParquetSource

    options = options_from_args(args)
    credentials = Credentials.from_env()
    options.validate()
    source = ParquetSource(args.input)
    validator = None
    if options.expectations_path:
        from polyv_connector.expectations import SuiteValidator
        from polyv_connector.expectations.suite import bundled_suite_path

        suite = str(bundled_suite_path()) if options.expectations_path == "default" else options.expectations_path
        validator = SuiteValidator.from_file(suite, report_dir=args.report)
    source.check_columns(options.mapping)
    report = ParquetReport(args.report)
    try:
        result = sync(source, credentials, options, report, validator=validator, seed=args.seed)
    except BaseException:
        report.abort()
        raise
    if validator is not None:
        result.extra.update(validator.summary())
    print(result.summary_line(), flush=True)
    print(f"report: {result.report_location}", flush=True)
    validation = result.extra.get("validation") or {}
    for label, key in (("validation result", "resultJson"), ("data docs", "dataDocsPage")):
        if validation.get(key):
            print(f"{label}: {validation[key]}", flush=True)
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2, allow_nan=False)
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyv-sync",
        description=__doc__.split("\n")[0].strip("`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="sync a Parquet input into POLYV viewer custom fields",
        description="Credentials come from POLYV_APP_ID and POLYV_APP_SECRET; the API "
        "base URL from POLYV_API_BASE_URL (default https://api.polyv.net).",
    )
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)
    sim = sub.add_parser("simulator", help="run a local POLYV API simulator for rehearsals and tests")
    from polyv_connector.simulator import cli as sim_cli

    sim_cli.add_arguments(sim)
    sim.set_defaults(func=sim_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # urllib3 logs request URLs (with the signature) at DEBUG: keep it quiet even with -v.
    from polyv_connector.transport.redact import install_log_redaction

    install_log_redaction()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(
            f"polyv-sync: configuration error: {_setting_name(exc.setting)}: {str(exc).split(': ', 1)[-1]}",
            file=sys.stderr,
        )
        return exit_codes.CONFIG.code
    except StateError as exc:
        print(f"polyv-sync: state error: {exc}", file=sys.stderr)
        return exit_codes.CONFIG.code
    except PolyvConnectorError as exc:
        print(f"polyv-sync: {exc}", file=sys.stderr)
        return exit_codes.ABORTED.code
    except KeyboardInterrupt:
        print("polyv-sync: interrupted; confirmed batches are kept in the state", file=sys.stderr)
        return exit_codes.SIGINT.code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
