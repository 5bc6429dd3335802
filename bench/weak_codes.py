"""Share of uniformly random keypad codes the trivial-code rule refuses
(:func:`controller.domain.codes.is_trivial`), by a seeded sample, with the 95 % interval
and the share for each rule on its own (a code can fall under several), with the share a
rule left out would cost.

    .venv/bin/python -m bench.weak_codes [--digits 10] [--samples 2000000] [--seed 1]

Pure CPU in this process; the figure does not depend on the machine's load (only the time
it takes does).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random

from controller.domain import codes as rules
from controller.domain.codes import is_trivial


def _majority(code: str) -> bool:
    return max(code.count(c) for c in set(code)) * 2 > len(code)


def _collapsed(code: str) -> bool:
    collapsed = "".join(c for c, _ in itertools.groupby(code))
    return collapsed != code and rules._trivial_shape(collapsed)


#: Each rule on its own (a refused code can fall under several); the last one is not
#: applied by ``is_trivial`` and shown for what it would cost.
REASONS = {
    "majority character": _majority,
    "periodic or progression": lambda c: rules._trivial_shape(c) and not _majority(c),
    "collapsed runs": _collapsed,
    "one off periodic": rules._one_off_periodic,
    "one off progression": rules._one_off_progression,
    "two trivial runs": rules._two_runs,
    "palindrome": lambda c: c == c[::-1],
    "date or two years": rules._has_date,
    "keyboard/keypad walk": rules._has_walk_or_word,
    "(not applied) one off majority": lambda c: max(c.count(x) for x in set(c)) * 2 >= len(c),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    top = 10 ** args.digits
    refused = 0
    counts = dict.fromkeys(REASONS, 0)
    examples: list[str] = []
    for _ in range(args.samples):
        code = f"{rng.randrange(top):0{args.digits}d}"
        for name, rule in REASONS.items():
            counts[name] += bool(rule(code))
        if is_trivial(code):
            refused += 1
            if len(examples) < 8:
                examples.append(code)
    share = refused / args.samples
    half = 1.96 * math.sqrt(share * (1 - share) / args.samples)
    print(f"{args.digits}-digit codes, {args.samples} uniform draws (seed {args.seed}):")
    print(f"  refused as trivial: {refused} = {share:.4%} (95 % interval "
          f"{share - half:.4%} .. {share + half:.4%}), about 1 in {1 / share:.0f}"
          if refused else "  refused as trivial: none")
    for name, count in counts.items():
        print(f"  {name}: {count} = {count / args.samples:.4%}")
    print(f"  examples: {' '.join(examples)}")


if __name__ == "__main__":
    main()
