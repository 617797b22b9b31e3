"""Code verdicts: judging a task's SQL check against the final state and the changeset.

Verdicts are "complete", "partial" or "incomplete", always with evidence: which
assertions held, whether the answer matched, and which changes broke the limits.
Progress is measured only on what was not already true in the seed, so a task whose
check the untouched seed satisfies can never look solved without work.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

import apsw

from envgen.db import SandboxedDB
from envgen.world import Assertion, Check

_NUM_RE = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d.]*\d)")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_OPS = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: a result name plus JSON-ready evidence."""

    result: str  # complete | partial | incomplete
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "evidence": self.evidence}


def assertion_value(db: SandboxedDB, a: Assertion) -> tuple[Any, str | None]:
    """Run an assertion's query sandboxed; (first value, error message or None)."""
    try:
        with db.deadline_of():
            row = db.conn.execute(a.sql).fetchone()
    except (apsw.Error, KeyError) as e:
        return None, f"{type(e).__name__}: {e}"
    return (row[0] if row else None), None


def compare(value: Any, op: str, expected: Any) -> bool:
    """Apply an assertion operator; NULL compares equal only to null."""
    if value is None or expected is None:
        return (value is None) == (expected is None) if op == "==" else (
            (value is None) != (expected is None) if op == "!=" else False
        )
    try:
        if isinstance(expected, (int, float)) and not isinstance(value, (int, float)):
            value = float(value)
        return _OPS[op](value, expected)
    except (TypeError, ValueError):
        return False


def assertion_states(db: SandboxedDB, check: Check) -> list[bool]:
    """Whether each assertion of a SQL check holds on the database as it is now."""
    return [_holds(db, a) for a in check.assertions]


def _holds(db: SandboxedDB, a: Assertion) -> bool:
    value, err = assertion_value(db, a)
    return err is None and compare(value, a.op, a.value)


def answer_matches(constraint: dict[str, Any] | None, final_answer: str | None) -> bool | None:
    """Whether the final answer contains every expected string (None when unconstrained).

    A number is expected as a whole number of the text ("5" is in "5 stars" and "5.00",
    not in "2.5" or "150"; thousands separators are read: "1,200" holds 1200); anything else
    as a substring, case-folded."""
    if constraint is None:
        return None
    text = (final_answer or "").casefold()
    numbers = {_norm_num(n) for n in _NUM_RE.findall(_THOUSANDS_RE.sub("", text))}
    for want in constraint.get("contains", []):
        w = want.casefold()
        if not (_norm_num(w) in numbers if _NUM_RE.fullmatch(w) else w in text):
            return False
    return True


def _norm_num(s: str) -> str:
    f = float(s)
    return str(int(f)) if f.is_integer() else repr(round(f, 6))


def change_violations(limits: dict[str, Any] | None, changes: list[dict[str, Any]]) -> list[str]:
    """Changes that the check's limits do not allow (empty when all are allowed)."""
    if limits is None:
        return []
    tables = limits.get("tables", {})
    bad = []
    for ch in changes:
        rule = tables.get(ch["table"])
        where = f"{ch['op']} on {ch['table']} {ch['pk']}"
        if rule is None:
            bad.append(f"{where}: table {ch['table']} must not change")
        elif ch["op"] not in rule["ops"]:
            bad.append(f"{where}: only {', '.join(rule['ops'])} allowed on {ch['table']}")
        elif rule.get("pks") is not None and _pk_value(ch["pk"]) not in rule["pks"]:
            bad.append(f"{where}: only rows {rule['pks']} of {ch['table']} may change")
        elif ch["op"] == "update" and rule.get("columns") is not None:
            extra = sorted(set(ch["new"]) - set(rule["columns"]))
            if extra:
                bad.append(f"{where}: columns {extra} must not change")
    return bad


def _pk_value(pk: dict[str, Any]) -> Any:
    values = list(pk.values())
    return values[0] if len(values) == 1 else values


def judge_sql_check(
    db: SandboxedDB,
    check: Check,
    changes: list[dict[str, Any]],
    final_answer: str | None,
    initial_states: list[bool],
) -> Verdict:
    """Judge a SQL check on the final state; `initial_states` are the assertions' seed values."""
    results = []
    for a, before in zip(check.assertions, initial_states):
        value, err = assertion_value(db, a)
        holds = err is None and compare(value, a.op, a.value)
        results.append({"assertion": a.description or a.sql, "holds": holds, "held_in_seed": before, "value": value, **({"error": err} if err else {})})
    answer_ok = answer_matches(check.answer, final_answer)
    violations = change_violations(check.changes, changes)
    all_hold = all(r["holds"] for r in results)
    progress = sum(1 for r in results if r["holds"] and not r["held_in_seed"]) + (1 if answer_ok else 0)
    if all_hold and answer_ok is not False and not violations:
        result = "complete"
    elif progress > 0:
        result = "partial"
    else:
        result = "incomplete"
    evidence = {"assertions": results, "violations": violations}
    if answer_ok is not None:
        evidence["answer_matched"] = answer_ok
    return Verdict(result, evidence)
