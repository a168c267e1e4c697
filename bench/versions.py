"""The previous version beside this one: every benchmark run for both, alternately, in one run.

What is measured
    The figures the other benchmarks print (scheduler lateness, API requests/s, link status
    store, spool, ICMP), for two versions of netsonde on the same machine in the same run:
      previous  a git ref (``--ref``, default the last commit before issue 10's house move),
                checked out in a worktree: an existing clean worktree of that commit is
                reused, otherwise one is made under the temp dir (and kept for the next run)
      this      the tree this script is in, as it is (uncommitted changes included)
    Each version runs its own ``bench/*.py`` (the scripts import each version's own module
    paths) with ``PYTHONPATH=<its src>`` and the same interpreter, this one. The benchmarks
    start the daemon through the venv's ``netsonde`` console script and the fork server with
    ``sys.executable -m``; both inherit PYTHONPATH, which comes before the venv's editable
    install on sys.path. Before measuring, the console script is run for each version with
    PYTHONVERBOSE=1 and must import ``netsonde.cli`` from that version's src.

    In every round (``--repeat``) each benchmark runs for the previous version, then for this
    one, so slow changes in the machine's load fall on both. Sizes are reduced to fit two
    shared cores (``SIZES``; ``--quick`` for a smoke test). Reported per figure: each run, the
    median per version, the change of the medians, and the spread (the larger within-version
    (max - min) / median: this run's own noise). Figures of peers that run no netsonde code
    (sqlite3, raw SQLite polls, fping, the stdlib ``sched`` loop) are marked "peer": they
    gauge the machine's noise, not netsonde.

    The raw output of every run is kept under ``--logs`` (default: a fresh temp dir).

Usage: python bench/versions.py [--ref 8eaff7c] [--benches scheduler,api,status,spool,icmp]
       [--repeat 2] [--quick] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from report import write_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REF = "8eaff7c"  # "README: results --samples shows the tool detail", before the move
SECTION = "## Previous version vs this one"
RUN_TIMEOUT = 3600.0  # one benchmark run, seconds: a hung run must not hold the machine

# Per benchmark: arguments for the comparison, and for a smoke test (--quick).
SIZES: dict[str, tuple[str, str]] = {
    "scheduler": (
        "--tests 2000 --rate 100 --seconds 20 --modes netsonde+fork stdlib-sched",
        "--tests 200 --rate 50 --seconds 3 --warmup 1 --modes netsonde+fork stdlib-sched",
    ),
    "api": (
        "--runs 1000 --seconds 8",
        "--tests 10 --runs 100 --seconds 1 --connections 4",
    ),
    "status": (
        "--links 2000 --rounds 200",
        "--links 100 --rounds 10 --queries 20",
    ),
    "spool": (
        "--results 10000 --naive 500 --nmwg 2000",
        "--results 500 --naive 50 --nmwg 100 --tests 10 --batch 100",
    ),
    "icmp": (
        "--sizes 100,1000 --peers netsonde,fping",
        "--sizes 10 --count 3 --peers netsonde,fping",
    ),
}


# ---- the two versions ----------------------------------------------------------------------


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass(frozen=True, slots=True)
class Version:
    label: str  # "previous" or "this"
    root: Path
    commit: str  # full sha of the checked-out commit
    dirty: list[str] = field(default_factory=list)  # uncommitted files under src/ and bench/

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def short(self) -> str:
        return self.commit[:7]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src)}

    def describe(self) -> str:
        subject = git("log", "-1", "--format=%s", self.commit)
        text = f"{self.short} ({subject}), in `{self.root}`"
        if self.dirty:
            text += f", with uncommitted changes to {len(self.dirty)} files under src/ and bench/"
        return text


def worktrees() -> Iterator[tuple[Path, str]]:
    """(path, HEAD sha) of every worktree of this repository."""
    path: Path | None = None
    for line in git("worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line.startswith("HEAD ") and path is not None:
            yield path, line.removeprefix("HEAD ")


def uncommitted(root: Path) -> list[str]:
    out = git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench", cwd=root)
    return [line[3:] for line in out.splitlines()]


def previous_version(ref: str) -> Version:
    """A clean worktree of ``ref``: an existing one, or a new one under the temp dir."""
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    for path, head in worktrees():
        if head == sha and path.resolve() != ROOT and path.is_dir() and not uncommitted(path):
            return Version("previous", path, sha)
    path = Path(tempfile.gettempdir()) / f"netsonde-bench-{sha[:12]}"
    if path.exists():
        raise SystemExit(f"{path} exists but is not a clean worktree of {sha[:7]}: remove it")
    print(f"making a worktree of {sha[:7]} in {path}", file=sys.stderr)
    git("worktree", "add", "--detach", str(path), sha)
    return Version("previous", path, sha)


def this_version() -> Version:
    return Version("this", ROOT, git("rev-parse", "HEAD"), uncommitted(ROOT))


def check_runs_own_code(version: Version) -> None:
    """The console script the benchmarks start must import this version's netsonde."""
    script = Path(sys.executable).parent / "netsonde"
    done = subprocess.run(
        [str(script), "--help"],
        env={**version.env(), "PYTHONVERBOSE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    # PYTHONVERBOSE names the file each module's code comes from: cli.py or its cached .pyc.
    found = {line for line in done.stderr.splitlines() if "/netsonde/__pycache__/cli." in line}
    found |= {line for line in done.stderr.splitlines() if "/netsonde/cli.py" in line}
    wrong = [line for line in found if str(version.src / "netsonde") not in line]
    if done.returncode or not found or wrong:
        raise SystemExit(
            f"{script} with PYTHONPATH={version.src} does not import that version's "
            f"netsonde.cli (exit {done.returncode}): {sorted(wrong or found)[:3]}"
        )


# ---- figures from the benchmarks' Markdown tables ------------------------------------------


def md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``text``, as rows keyed by the header cells."""
    tables: list[list[dict[str, str]]] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) > 2:
            tables.append([dict(zip(block[0], row, strict=True)) for row in block[2:]])
        block = []
    return tables


def number(cell: str) -> float:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return math.nan


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    higher_is_better: bool
    value: float
    peer: bool = False  # a peer that runs no netsonde code: a gauge of the machine's noise


def scheduler_figures(text: str) -> list[Figure]:
    figures = []
    for row in md_tables(text)[0]:
        mode, peer = row["mode"], row["mode"] == "stdlib-sched"
        late = next(k for k in row if k.startswith("late >"))
        for column, name in (
            ("lateness p50 ms", "lateness p50 ms"),
            ("p99 ms", "lateness p99 ms"),
            ("max ms", "lateness max ms"),
            (late, f"runs {late}"),
            ("missed", "missed"),
            ("CPU s", "CPU s"),
        ):
            if row[column] != "n/a":
                figures.append(Figure(f"{mode}: {name}", False, number(row[column]), peer))
    return figures


def api_figures(text: str) -> list[Figure]:
    figures = []
    for row in md_tables(text)[0]:
        name, peer = row["workload"], row["workload"].startswith("sqlite3")
        figures.append(Figure(f"{name}: requests/s", True, number(row["requests/s"]), peer))
        figures.append(Figure(f"{name}: p99 ms", False, number(row["p99 ms"]), peer))
        if number(row["non-2xx"]):  # errors are a figure only where there are some
            figures.append(Figure(f"{name}: non-2xx", False, number(row["non-2xx"]), peer))
    return figures


def status_figures(text: str) -> list[Figure]:
    figures = []
    for row in md_tables(text)[0]:
        peer = row["peer"] != "netsonde"
        figures.append(Figure(f"{row['peer']}: updates/s", True, number(row["updates/s"]), peer))
        for column, cell in row.items():
            query, found, _ = column.partition(" p50 / p99 ms")
            if found:  # "0.69 / 0.99 (100)": p50, p99 (rows answered)
                p50, p99 = re.findall(r"[\d.]+", cell.replace(",", ""))[:2]
                figures.append(Figure(f"{row['peer']}: {query} p50 ms", False, float(p50), peer))
                figures.append(Figure(f"{row['peer']}: {query} p99 ms", False, float(p99), peer))
    return figures


def spool_figures(text: str) -> list[Figure]:
    return [
        Figure(f"{row['workload']}: results/s", True, number(row["results/s"]))
        for row in md_tables(text)[0]
    ]


def icmp_figures(text: str) -> list[Figure]:
    figures = []
    for row in md_tables(text)[0]:
        who, peer = f"{row['targets']} targets, {row['peer']}", row["peer"] != "netsonde"
        replies, sent = (number(x) for x in row["replies / sent"].split("/"))
        figures.append(Figure(f"{who}: wall s", False, number(row["wall s"]), peer))
        figures.append(Figure(f"{who}: CPU s", False, number(row["CPU s"]), peer))
        figures.append(Figure(f"{who}: RTT p99 ms", False, number(row["RTT p99 ms"]), peer))
        figures.append(Figure(f"{who}: replies lost", False, sent - replies, peer))
    return figures


@dataclass(frozen=True, slots=True)
class Bench:
    title: str
    script: str
    figures: Callable[[str], list[Figure]]


BENCHES = {
    "scheduler": Bench("Scheduler", "bench/scheduler.py", scheduler_figures),
    "api": Bench("API", "bench/api.py", api_figures),
    "status": Bench("Link status store", "bench/status.py", status_figures),
    "spool": Bench("Spool", "bench/spool.py", spool_figures),
    "icmp": Bench("ICMP engine", "bench/icmp.py", icmp_figures),
}


# ---- running ---------------------------------------------------------------------------------


def bench_args(name: str, args: argparse.Namespace) -> list[str]:
    full, quick = SIZES[name]
    return shlex.split(quick if args.quick else full)


def api_data(args: argparse.Namespace, version: Version) -> Path:
    """Each version builds its own archive with its own code (not the shared cache)."""
    return args.logs / f"api-data-{version.label}"


def run_once(name: str, args: argparse.Namespace, version: Version, tag: str) -> list[Figure]:
    """One run of one benchmark for one version; its output is kept in the log dir."""
    argv = [sys.executable, BENCHES[name].script, *bench_args(name, args)]
    if name == "api":
        argv += ["--data", str(api_data(args, version))]
    load = os.getloadavg()[0]
    print(f"{tag} {name}, {version.label} ({version.short}), load {load:.2f}…", file=sys.stderr)
    started = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=version.root,
        env=version.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,
    )
    log = args.logs / f"{name}-{tag}-{version.label}"
    log.with_suffix(".out").write_text(done.stdout)
    log.with_suffix(".err").write_text(done.stderr)
    print(f"  {time.monotonic() - started:.0f} s, exit {done.returncode}", file=sys.stderr)
    if done.returncode:
        print(f"  failed, see {log}.err:\n{done.stderr.strip()[-1500:]}", file=sys.stderr)
        return []
    try:
        return BENCHES[name].figures(done.stdout)
    except (IndexError, KeyError, ValueError, StopIteration) as e:
        print(f"  cannot parse its output ({e!r}), see {log}.out", file=sys.stderr)
        return []


Runs = dict[str, dict[str, list[list[Figure]]]]  # bench → version label → one list per run


def run_all(args: argparse.Namespace, versions: list[Version]) -> Runs:
    runs: Runs = {name: {v.label: [] for v in versions} for name in args.benches}
    for r in range(1, args.repeat + 1):
        for name in args.benches:
            for version in versions:
                runs[name][version.label].append(run_once(name, args, version, f"{r}"))
    return runs


# ---- report ----------------------------------------------------------------------------------


def fmt(x: float) -> str:
    if math.isnan(x):
        return "–"
    if abs(x) >= 100 or x.is_integer():
        return f"{x:,.0f}"
    return f"{x:.3g}"  # the benchmarks print 2 decimals, RTTs 4


def change(old: float, new: float) -> str:
    if math.isnan(old) or math.isnan(new):
        return "–"
    if old == 0:
        return "0 %" if new == 0 else "n/a"
    return f"{(new - old) / abs(old) * 100:+.1f} %"


def spread(values: list[float]) -> float:
    """(max - min) / median of one version's runs, or nan."""
    values = [v for v in values if not math.isnan(v)]
    if len(values) < 2 or statistics.median(values) == 0:
        return math.nan
    return (max(values) - min(values)) / abs(statistics.median(values)) * 100


def table(per_version: dict[str, list[list[Figure]]]) -> str:
    old_runs, new_runs = per_version["previous"], per_version["this"]
    names: dict[str, Figure] = {}  # every figure seen, in first-seen order
    for run in [*old_runs, *new_runs]:
        for f in run:
            names.setdefault(f.name, f)

    def values(runs: list[list[Figure]], name: str) -> list[float]:
        return [next((f.value for f in run if f.name == name), math.nan) for run in runs]

    def median(xs: list[float]) -> float:
        xs = [x for x in xs if not math.isnan(x)]
        return statistics.median(xs) if xs else math.nan

    lines = [
        "| figure | better | previous: runs | previous: median "
        "| this: runs | this: median | change | spread |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in names.items():
        old, new = values(old_runs, name), values(new_runs, name)
        spreads = [s for s in (spread(old), spread(new)) if not math.isnan(s)]
        label = f"{name} (peer)" if f.peer else name
        lines.append(
            f"| {label} | {'higher' if f.higher_is_better else 'lower'} "
            f"| {', '.join(map(fmt, old))} | {fmt(median(old))} "
            f"| {', '.join(map(fmt, new))} | {fmt(median(new))} "
            f"| {change(median(old), median(new))} "
            f"| {f'{max(spreads):.0f} %' if spreads else '–'} |"
        )
    return "\n".join(lines)


def command(args: argparse.Namespace, previous: Version) -> str:
    """The full command, every option spelled out, the ref as a commit: it reproduces the run."""
    argv = [".venv/bin/python", "bench/versions.py", "--ref", previous.short]
    argv += ["--benches", ",".join(args.benches), "--repeat", str(args.repeat)]
    argv += ["--quick"] if args.quick else []
    if args.write:
        write = args.write.resolve()
        argv += ["--write", str(write.relative_to(ROOT) if write.is_relative_to(ROOT) else write)]
    return shlex.join(argv)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"nproc {len(os.sched_getaffinity(0))}, {model}, {platform.system()} {platform.release()}"
    )


def failed_runs(runs: Runs) -> str:
    """The runs that gave no figures (the benchmark failed or its output did not parse)."""
    return ", ".join(
        f"{name} round {r} {label}"
        for name, per in runs.items()
        for label, figures in per.items()
        for r, run in enumerate(figures, 1)
        if not run
    )


def section(
    args: argparse.Namespace,
    versions: list[Version],
    runs: Runs,
    loads: tuple[str, str],
    minutes: float,
) -> str:
    previous, this = versions
    lines = [
        SECTION,
        "",
        f"- command: `{command(args, previous)}`",
        f"- previous version: {previous.describe()}",
        f"- this version: {this.describe()}",
        f"- machine: {machine()}",
        f"- python: {platform.python_implementation()} {platform.python_version()} "
        f"(`{sys.executable}`), the same for both versions, each with `PYTHONPATH=<its src>`",
        f"- load average at start: {loads[0]}; at the end: {loads[1]}; {minutes:.0f} min",
        f"- order: {args.repeat} round(s); in each, every benchmark runs for the previous version, "
        "then for this one, each version with its own bench scripts",
        "- change = this version's median against the previous one's; spread = the larger "
        "(max − min) / median of one version's runs, the noise of this run; rows marked "
        "(peer) run no netsonde code and show how noisy the machine was",
    ]
    if (head := git("rev-parse", "HEAD")) != this.commit:  # others commit to the same tree
        lines.append(f"- this version's HEAD moved to {head[:7]} during the run")
    if failed := failed_runs(runs):
        lines.append(f"- failed runs (– in the tables; output in `{args.logs}`): {failed}")
    for name in args.benches:
        argv = shlex.join(["python", BENCHES[name].script, *bench_args(name, args)])
        lines += ["", f"### {BENCHES[name].title}", "", f"Each run: `{argv}`", ""]
        lines.append(table(runs[name]))
    return "\n".join(lines) + "\n"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ref", default=DEFAULT_REF, help="the previous version (a git ref)")
    ap.add_argument("--benches", default=",".join(BENCHES), help="comma-separated")
    ap.add_argument("--repeat", type=int, default=2, help="runs per version of each benchmark")
    ap.add_argument("--quick", action="store_true", help="smallest sizes: a smoke test")
    ap.add_argument("--write", type=Path, help="put the section into this file (BENCHMARKS.md)")
    ap.add_argument("--logs", type=Path, help="where each run's output is kept")
    args = ap.parse_args()
    args.benches = [b for b in args.benches.split(",") if b]
    unknown = set(args.benches) - set(BENCHES)
    if unknown or not args.benches or args.repeat < 1:
        ap.error(f"--benches from {','.join(BENCHES)} ({sorted(unknown)} unknown); --repeat >= 1")
    args.logs = args.logs or Path(tempfile.mkdtemp(prefix="netsonde-bench-versions-"))
    args.logs.mkdir(parents=True, exist_ok=True)
    return args


def main() -> int:
    args = parse_args()
    versions = [previous_version(args.ref), this_version()]
    for version in versions:
        check_runs_own_code(version)
        print(f"{version.label}: {version.short} from {version.src}", file=sys.stderr)
    print(f"logs: {args.logs}", file=sys.stderr)
    start_load, started = loadavg(), time.monotonic()
    try:
        runs = run_all(args, versions)
    finally:  # the archives the API runs built are only a means (~100 MB each)
        for version in versions:
            shutil.rmtree(api_data(args, version), ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    text = section(args, versions, runs, (start_load, loadavg()), minutes)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    return 1 if failed_runs(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
