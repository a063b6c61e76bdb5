"""Commands in README.md and docs/ are real.

Every line of a shell block (```sh, ```bash, ```shell, ```console) is a command a reader may run:
``polyv-sync …`` must parse with the CLI's own parser; ``airflow dags …`` and ``airflow backfill
create`` must name an example DAG, and every key of their ``-c``/``--conf`` JSON must be a param of
that DAG; ``make X`` must be a Makefile target; any other program must be one a reader runs as
is (``pip``, ``export``, ...). SQL blocks are ```sql <engine>``` blocks, which
tests/warehouse/test_docs_sql.py runs on their engine. A shell or SQL block that is not meant to
be run as written carries the one illustration marker: ``<!-- illustration -->`` on the line
right before its fence (tests/docs/markdown.py).

The DAG files are imported as Airflow's DAG processor would (scripts/make_docs.py's reader): their
params are built by shared functions. A conf's values are validated against the params' JSON
schemas (types, patterns, bounds), as Airflow validates a trigger.
"""

from __future__ import annotations

import json
import re
import shlex

import jsonschema  # type: ignore[import-untyped]
import pytest

from polyv_connector.cli import build_parser
from scripts.make_docs import dag_params, param_schemas
from tests.docs.markdown import DOC_FILES, ROOT, SHELL_LANGUAGES, Block, blocks, prose

ENGINES = frozenset({"postgresql", "mysql", "duckdb"})
#: Programs whose lines are run as written and checked no further.
PLAIN_PROGRAMS = frozenset({"export", "pip", "git", "cd", "cp", "python", ".venv/bin/python", "ls", "grep", "mkdir"})
#: ``airflow`` subcommands a reader runs as is (``dags`` and ``backfill`` are checked).
AIRFLOW_PLAIN = frozenset({"db", "providers", "connections", "variables", "version", "config", "standalone"})
OPERATORS = frozenset({"&&", "||", "|", ";", "&"})
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _shell_blocks() -> list[Block]:
    return [b for p in DOC_FILES for b in blocks(p) if b.language in SHELL_LANGUAGES and not b.illustration]


def _without_substitutions(line: str) -> str:
    """``$(...)`` (balanced, quotes inside included) replaced by one word: its output is a value."""
    out, i = [], 0
    while i < len(line):
        if line.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            out.append("SUBSTITUTED")
            i = j
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def _open_quote(line: str) -> bool:
    try:
        shlex.split(_without_substitutions(line), comments=True)
    except ValueError:
        return True
    return False


def _commands(block: Block) -> list[list[str]]:
    """Each simple command of the block as tokens (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", block.body)
    lines: list[str] = []
    for line in text.splitlines():
        if lines and _open_quote(lines[-1]):
            lines[-1] += "\n" + line  # a quoted argument spans lines (a JSON conf)
        else:
            lines.append(line)
    out: list[list[str]] = []
    for line in lines:
        lexer = shlex.shlex(_without_substitutions(line), posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in OPERATORS:
                out.append(current)
                current = []
            else:
                current.append(token)
        out.append(current)
    return [[t for t in c] for c in out if c]


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.MULTILINE))


def _check_airflow(tokens: list[str], dags: dict[str, dict[str, tuple[str, str]]]) -> None:
    sub = tokens[1] if len(tokens) > 1 else ""
    if sub in AIRFLOW_PLAIN:
        return
    if sub == "backfill":
        dag_id = tokens[tokens.index("--dag-id") + 1]
        assert dag_id in dags, f"no DAG {dag_id!r}"
        return
    assert sub == "dags", f"airflow {sub}: not a command the docs may show unmarked"
    action, rest = tokens[2], tokens[3:]
    if action == "list":
        return
    positional = [
        t for i, t in enumerate(rest) if not t.startswith("-") and (i == 0 or rest[i - 1] not in ("-c", "--conf"))
    ]
    dag_id = positional[0]
    assert dag_id in dags, f"no DAG {dag_id!r}"
    for flag in ("-c", "--conf"):
        if flag in rest:
            conf = json.loads(rest[rest.index(flag) + 1])
            unknown = set(conf) - set(dags[dag_id])
            assert not unknown, f"{dag_id} has no param {sorted(unknown)} (params: {sorted(dags[dag_id])})"
            for name, value in conf.items():
                try:
                    jsonschema.validate(value, param_schemas()[dag_id][name])
                except jsonschema.ValidationError as exc:
                    raise AssertionError(f"{dag_id}: param {name} refuses {value!r}: {exc.message}") from None


def _check(tokens: list[str], dags: dict[str, dict[str, tuple[str, str]]], targets: set[str]) -> None:
    while tokens and ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return  # only assignments: VAR=value
    program = tokens[0]
    if program == "polyv-sync":
        try:
            build_parser().parse_args(tokens[1:])
        except SystemExit as exc:
            raise AssertionError(f"does not parse: {shlex.join(tokens)}") from exc
    elif program == "airflow":
        _check_airflow(tokens, dags)
    elif program == "pip":
        unpublished = [t for t in tokens if re.match(r"['\"]?polyv[-_]connector\b", t)]
        assert not unpublished, "polyv-connector is not on PyPI: install the wheel (make wheel) or a clone"
    elif program == "make":
        for target in tokens[1:]:
            assert target in targets, f"no make target {target!r}"
    else:
        assert program in PLAIN_PROGRAMS, f"{program}: unknown program; mark the block <!-- illustration -->"


@pytest.mark.parametrize("block", _shell_blocks(), ids=Block.where)
def test_every_shell_command_is_real(block: Block) -> None:
    dags, targets = dag_params(), _make_targets()
    for tokens in _commands(block):
        try:
            _check(tokens, dags, targets)
        except AssertionError as exc:
            raise AssertionError(f"{block.where()}: {shlex.join(tokens)}: {exc}") from None


def test_there_are_commands_to_check() -> None:
    """The parser above sees the commands the README is built around (a guard against a
    reader that silently finds nothing)."""
    readme = [tokens for b in _shell_blocks() if b.path.name == "README.md" for tokens in _commands(b)]
    programs = {t[0] for t in readme}
    assert {"polyv-sync", "airflow", "make", "pip"} <= programs


def test_every_sql_block_names_its_engine_or_is_an_illustration() -> None:
    bad = [
        b.where()
        for p in DOC_FILES
        for b in blocks(p)
        if b.language == "sql" and not b.illustration and (len(b.info.split()) != 2 or b.info.split()[1] not in ENGINES)
    ]
    assert bad == [], f"```sql <engine>``` (one of {sorted(ENGINES)}) or <!-- illustration -->: {bad}"


def test_no_prose_installs_the_package_by_name() -> None:
    """The package is not published: a `pip install polyv-connector…` in a sentence fails too."""
    bad = [
        (p.name, m.group(0))
        for p in DOC_FILES
        for m in re.finditer(r"pip install ['\"]?polyv[-_]connector\b[^`]*", prose(p))
    ]
    assert bad == []


def test_a_wrong_command_is_caught() -> None:
    dags, targets = dag_params(), _make_targets()
    for wrong in (
        ["polyv-sync", "run", "--input", "x", "--report", "y", "--no-such-flag"],
        ["airflow", "dags", "test", "polyv_no_such_dag"],
        ["airflow", "dags", "test", "polyv_viewer_sync_warehouse", "-c", '{"source_tabel": "t"}'],
        ["airflow", "dags", "test", "polyv_viewer_sync_warehouse", "-c", '{"source_table": "t; DROP TABLE x"}'],
        ["airflow", "dags", "trigger", "polyv_viewer_sync_partitioned", "--conf", '{"partitions": 0}'],
        ["make", "no-such-target"],
        ["pip", "install", "polyv-connector[airflow]"],
        ["rm", "-rf", "/"],
    ):
        with pytest.raises(AssertionError):
            _check(wrong, dags, targets)
