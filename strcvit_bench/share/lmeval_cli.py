"""lm-eval's own command line with the `strcvit` model registered:

    python -m strcvit_bench.share.lmeval_cli --model strcvit --model_args run=RUNDIR,chunk=3 \\
        --include_path TASKDIR --tasks demo
"""

from strcvit_bench.share.lmeval import strcvit_lm


def main() -> None:
    strcvit_lm()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
