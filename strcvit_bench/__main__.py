from strcvit_bench.cli import main

main()
