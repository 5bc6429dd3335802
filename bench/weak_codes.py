"""Share of uniformly random keypad codes the trivial-code rule refuses
(:func:`controller.domain.codes.is_trivial`), by a seeded sample, with the 95 % interval
and the share for each reason (a code can have several).

    .venv/bin/python -m bench.weak_codes [--digits 10] [--samples 2000000] [--seed 1]

Pure CPU in this process; the figure does not depend on the machine's load (only the time
it takes does).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random

from controller.domain.codes import is_trivial


def _majority(code: str) -> bool:
    return max(code.count(c) for c in set(code)) * 2 > len(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    top = 10 ** args.digits
    refused = majority = collapsed_changes = 0
    examples: list[str] = []
    for _ in range(args.samples):
        code = f"{rng.randrange(top):0{args.digits}d}"
        if is_trivial(code):
            refused += 1
            majority += _majority(code)
            if len(examples) < 8:
                examples.append(code)
            collapsed = "".join(c for c, _ in itertools.groupby(code))
            collapsed_changes += collapsed != code and not _majority(code)
    share = refused / args.samples
    half = 1.96 * math.sqrt(share * (1 - share) / args.samples)
    print(f"{args.digits}-digit codes, {args.samples} uniform draws (seed {args.seed}):")
    print(f"  refused as trivial: {refused} = {share:.4%} (95 % interval "
          f"{share - half:.4%} .. {share + half:.4%}), about 1 in {1 / share:.0f}"
          if refused else "  refused as trivial: none")
    print(f"  of which a majority character: {majority}; other refusals: "
          f"{refused - majority} ({collapsed_changes} with repeated characters)")
    print(f"  examples: {' '.join(examples)}")


if __name__ == "__main__":
    main()
