#!/usr/bin/env python3
"""Checks the include graph and the ISA rules of include/dynasparse/.

1. A module's headers include only their own module or modules below it:
   core -> simd -> io -> {quant, sparse} -> nn -> model -> parallel.
2. Only detail/isa.hpp reads the compiler's ISA macros (__AVX2__, __ARM_NEON, ...).
3. Raw intrinsics headers (<immintrin.h>, <arm_neon.h>) appear only in
   simd/detail/<isa>_*.hpp files.

Usage: check_layers.py [REPO]. Prints one line per violation; exit status 1 if any.
"""
import os
import re
import sys

ORDER = {"core": 0, "simd": 1, "io": 2, "quant": 3, "sparse": 3, "nn": 4, "model": 5,
         "parallel": 6}
INCLUDE = re.compile(r'#\s*include\s*[<"]dynasparse/([a-z_]+)/')
ISA_MACRO = re.compile(r"\b__(AVX\w*|SSE\w*|FMA|ARM_NEON|ARM_FEATURE_\w+|aarch64)__\b")
INTRINSICS = re.compile(r"#\s*include\s*<(immintrin|arm_neon|x86intrin|emmintrin)\.h>")
ISA_FILE = re.compile(r"simd/detail/(x86|arm)_[a-z0-9_]+\.hpp$")


def main() -> int:
    repo = sys.argv[1] if len(sys.argv) > 1 else "."
    root = os.path.join(repo, "include", "dynasparse")
    if not os.path.isdir(root):
        print(f"check_layers: no include/dynasparse/ under {repo}")
        return 1
    problems = []
    count = 0
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            if not name.endswith((".hpp", ".h")):
                continue
            count += 1
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            module = rel.split("/")[0] if "/" in rel else None
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
            for number, line in enumerate(lines, 1):
                where = f"include/dynasparse/{rel}:{number}"
                m = INCLUDE.search(line)
                if m and module in ORDER and m.group(1) in ORDER:
                    dep = m.group(1)
                    if dep != module and ORDER[dep] >= ORDER[module]:
                        problems.append(f"{where}: {module}/ includes {dep}/ "
                                        f"(allowed: {module}/ and modules below it)")
                if ISA_MACRO.search(line) and rel != "detail/isa.hpp":
                    problems.append(f"{where}: reads a compiler ISA macro; use DYNASPARSE_HAS_* "
                                    f"from detail/isa.hpp")
                if INTRINSICS.search(line) and not ISA_FILE.search(rel):
                    problems.append(f"{where}: intrinsics header outside simd/detail/<isa>_*.hpp")
    for p in problems:
        print(p)
    print(f"check_layers: {count} headers, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
