"""`make mutate`: mutation checking of the core modules with mutmut, sampled to fit ~30 minutes.

Why mutmut: it forks the already-imported test process for each mutant and runs only the tests
that cover the mutated function (it maps them once per run), so a mutant costs a fraction of a
second instead of a fresh `import torch` per mutant (cosmic-ray starts a new process each time).

For each group of core modules this script
1. copies the working tree (tracked + untracked, not ignored files) to a scratch folder and
   writes a `[tool.mutmut]` section naming the modules and the test files that check them;
2. lets mutmut generate every mutant and map tests to functions (`mutmut run` with a filter
   that matches nothing, which stops right after that step);
3. samples `--per-module` mutants per source file with a fixed seed and runs just those;
4. prints killed / survived / not covered per module and the kill ratio, and lists each
   survivor with `mutmut show`'s diff line, so it can be killed by a test or recorded as
   equivalent in `tests/mutation/equivalents.txt` (one line per mutant: its name, its changed
   line and why no test can tell it from the original). A listed survivor is reported as
   "equivalent", and the score leaves it out: killed / (sampled - equivalent). An entry whose
   changed line no longer matches the mutant (the source moved) counts as a plain survivor.

The sample is fixed by `--seed` (0) and `--per-module` (20): the same tree always runs the same
mutants, so two runs' figures compare.

Not part of `make test`: it is slow. Run `make mutate` (or `python tests/mutation/run.py
--help`). moe/parallel.py is left out: its tests run in torchrun subprocesses, which mutmut's
in-process coverage map cannot see, so every mutant there would read "no tests".
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EQUIVALENTS = Path(__file__).with_name("equivalents.txt")

# group -> (files to mutate, test files that check them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "moe": (["moe/router.py", "moe/experts.py", "moe/soft_moe.py", "moe/metrics.py",
             "moe/dense.py", "moe/topk.py"],
            ["tests/moe/test_soft_moe.py", "tests/moe/test_moe_metrics.py",
             "tests/moe/test_topk_moe.py", "tests/moe/test_experts_units.py"]),
    "model": (["specaware/model/*.py"], ["tests/model/", "tests/test_backbone.py",
                                         "tests/data/test_torchgeo.py"]),
    "data": (["specaware/data/codec.py", "specaware/data/collate.py", "specaware/data/stream.py",
              "specaware/data/raster.py"],
             ["tests/data/test_codec.py", "tests/data/test_collate.py",
              "tests/data/test_stream.py", "tests/data/test_raster.py",
              "tests/data/test_skips.py", "tests/data/test_units.py",
              "tests/data/test_curate.py"]),
    "metrics": (["specaware/finetune/metrics.py"], ["tests/finetune/test_metrics.py"]),
    "checkpoint": (["specaware/training/checkpoint.py"],
                   ["tests/training/test_checkpoint_files.py",
                    "tests/training/test_checkpoint_durability.py"]),
}
KILLED, SURVIVED = {1, 3}, {0}
NO_TESTS, TIMEOUT = {5, 33}, {36, 24, -24, 152, 255}


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src, dst = REPO / name, dest / name
        if src.is_symlink() or not src.exists():
            continue                      # configs/ and bench/ link into the package
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def configure(dest: Path, files: list[str], tests: list[str]) -> list[str]:
    tests = [t for t in tests if (dest / t).exists()]
    section = {
        "source_paths": ["specaware/", "moe/"],
        "only_mutate": files,
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-m", "not distributed"],
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in section.items()]
    with open(dest / "pyproject.toml", "a") as f:
        f.write("\n".join(lines) + "\n")
    return tests


def mutmut(dest: Path, names: list[str], children: int, log) -> int:
    cmd = [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", str(children),
           *names]
    return subprocess.run(cmd, cwd=dest, stdout=log, stderr=subprocess.STDOUT).returncode


def reap_strays(dest: Path) -> int:
    """Kill processes still running in `dest` after mutmut returned: a mutant that hangs a
    DataLoader worker can leave the worker behind (reparented to init). Returns how many."""
    killed = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            inside = Path(os.readlink(proc / "cwd")).is_relative_to(dest)
        except OSError:
            continue                      # gone, or not ours to read
        if inside and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
    return killed


def results(dest: Path) -> dict[str, dict[str, int | None]]:
    """module path -> {mutant name: exit code or None (not run)}."""
    out = {}
    for meta in sorted((dest / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            out[str(meta.relative_to(dest / "mutants")).removesuffix(".meta")] = codes
    return out


def changed_lines(dest: Path, name: str) -> tuple[str, str]:
    """(first removed line, first added line) of mutant `name`, stripped."""
    shown = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "show", name], cwd=dest,
                           capture_output=True, text=True).stdout
    changed = [ln for ln in shown.splitlines() if re.match(r"^[+-](?![+-])", ln)]
    removed = next((ln[1:].strip() for ln in changed if ln.startswith("-")), "")
    added = next((ln[1:].strip() for ln in changed if ln.startswith("+")), "")
    return removed, added


def read_equivalents(path: Path = EQUIVALENTS) -> dict[str, tuple[str, str]]:
    """mutant name -> (its added line, reason) from `name | added line | reason` lines."""
    out = {}
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(" | ")
        added, _, reason = rest.rpartition(" | ")
        if not (name and added and reason):
            raise SystemExit(f"{path}:{number}: expected 'mutant name | added line | reason'")
        out[name.strip()] = (added.strip(), reason.strip())
    return out


def run_group(group: str, args, root: Path, equivalents: dict[str, tuple[str, str]]
              ) -> list[tuple[str, int, int, list[str], list[str]]]:
    """Rows (module, sampled, killed, survivor lines, equivalent lines) of one group."""
    files, tests = GROUPS[group]
    dest = root / group
    shutil.rmtree(dest, ignore_errors=True)
    copy_tree(dest)
    tests = configure(dest, files, tests)
    with open(root / f"{group}.log", "w") as log:
        mutmut(dest, ["__map_only_no_mutant_matches__"], args.children, log)   # generate + map
        everything = results(dest)
        rng = random.Random(args.seed)
        sample = [n for codes in everything.values()
                  for n in rng.sample(sorted(codes), min(args.per_module, len(codes)))]
        if sample:
            mutmut(dest, sample, args.children, log)
    strays = reap_strays(dest)
    if strays:
        print(f"{group}: killed {strays} process(es) that hung mutants left in {dest}")
    rows = []
    for module, codes in results(dest).items():
        picked = {n: c for n, c in codes.items() if n in set(sample)}
        if picked and all(c is None for c in picked.values()):
            raise SystemExit(f"{group}: mutmut ran no mutant of {module} (its clean test run "
                             f"failed?): see {root / f'{group}.log'}")
        killed = sum(c in KILLED or c in TIMEOUT for c in picked.values())
        survivors, equivalent = [], []
        for n in (n for n, c in picked.items() if c in SURVIVED or c in NO_TESTS or c is None):
            removed, added = changed_lines(dest, n)
            listed = equivalents.get(n)
            if listed and listed[0] == added:
                equivalent.append(f"{n}: {listed[1]}")
            else:
                stale = " (listed as equivalent for another line: stale)" if listed else ""
                survivors.append(f"{n}{stale}: - {removed} | + {added}"[:200])
        rows.append((module, len(picked), killed, survivors, equivalent))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"of {list(GROUPS)}")
    ap.add_argument("--per-module", type=int, default=20, help="mutants sampled per module")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--children", type=int, default=2, help="parallel mutant processes")
    ap.add_argument("--workdir", default="/tmp/specaware-mutate")
    args = ap.parse_args()
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    equivalents = read_equivalents()
    total = {"sampled": 0, "killed": 0, "equivalent": 0}
    t0 = time.perf_counter()
    for group in args.groups.split(","):
        for module, n, killed, survivors, equivalent in run_group(group, args, root, equivalents):
            total["sampled"] += n
            total["killed"] += killed
            total["equivalent"] += len(equivalent)
            print(f"{module:<40} sampled {n:>3}  killed {killed:>3}  survived "
                  f"{len(survivors) + len(equivalent):>3} (equivalent {len(equivalent)})  "
                  f"score {score(killed, n, len(equivalent))}", flush=True)
            for line in survivors:
                print(f"    survivor {line}")
            for line in equivalent:
                print(f"    equivalent {line}")
    n, k, e = total["sampled"], total["killed"], total["equivalent"]
    if n:
        print(f"\ncore: sampled {n}, killed {k}, survived {n - k}, of which {e} listed as "
              f"equivalent ({EQUIVALENTS.name}); score killed / (sampled - equivalent) = "
              f"{score(k, n, e)}, raw kill ratio {k / n:.1%} (seed {args.seed}, "
              f"{args.per_module} per module, {time.perf_counter() - t0:.0f} s)")
    return 0


def score(killed: int, sampled: int, equivalent: int) -> str:
    live = sampled - equivalent
    return f"{killed}/{live} = {killed / live:.1%}" if live else "-"


if __name__ == "__main__":
    sys.exit(main())
