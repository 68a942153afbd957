#!/usr/bin/env bash
# scaling_charts.sh: draws the PNG charts of bench/scaling.sh from the CSV files in OUT_DIR with gnuplot
# (apt-get install gnuplot-nox): comm_busbw.png, planner.png, scaling.png and bubble.png.
# Usage: bench/scaling_charts.sh OUT_DIR
set -euo pipefail
out="${1:?usage: scaling_charts.sh OUT_DIR}"
command -v gnuplot > /dev/null || { echo "scaling_charts.sh: gnuplot is missing: apt-get install gnuplot-nox"; exit 1; }
gnuplot << GNUPLOT
set terminal pngcairo size 900,560 font "sans,11" noenhanced
set datafile separator ","
set key top left
set grid

set output "$out/comm_busbw.png"
set title "Bus bandwidth on this 2-core machine (shared memory), kosmos Comm against plain MPI"
set logscale x 2
set xlabel "message bytes"
set ylabel "bus bandwidth, GB/s"
set format x "%.0s%cB"
plot "< grep ^all_reduce $out/comm_2.csv" using 2:6 with linespoints title "all-reduce, 2 ranks", \
     "< grep ^all_reduce $out/comm_2.csv" using 2:8 with lines dashtype 2 title "MPI_Allreduce, 2 ranks", \
     "< grep ^all_reduce $out/comm_4.csv" using 2:6 with linespoints title "all-reduce, 4 ranks", \
     "< grep ^all_gather $out/comm_2.csv" using 2:6 with linespoints title "all-gather, 2 ranks", \
     "< grep ^exchange $out/comm_2.csv" using 2:6 with linespoints title "pairwise exchange, 2 ranks"
unset logscale x
set format x "%g"

set output "$out/planner.png"
set title "kosmos plan against measured steps: small preset, 8 x 256 tokens per step, 2 CPU ranks (calibrated on dp 2)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30
set xlabel ""
set ylabel "step, seconds"
set yrange [0:*]
set xrange [-0.6:*]
plot "$out/planner.csv" using 2:xtic(1) title "measured", "" using 3 title "predicted"
unset style
set style data linespoints
set xtics norotate

set output "$out/scaling.png"
set title "Data-parallel scaling of the small preset on this 2-core machine (4 ranks oversubscribe)"
set xlabel "ranks"
set ylabel "tokens per second"
set logscale x 2
set xrange [0.9:4.4]
set yrange [0:*]
set xtics (1, 2, 4)
plot "$out/scaling.csv" using 1:3 with linespoints title "strong (8 sequences per step)", \
     "$out/scaling.csv" using 1:5 with linespoints title "weak (4 sequences per rank)"

set output "$out/bubble.png"
set title "Pipeline bubble with 2 stages against the 1F1B formula (p-1)/(m+p-1)"
set xlabel "micro-batches"
set ylabel "idle fraction of stage 0"
set xtics (2, 4, 8, 16)
set logscale x 2
set xrange [1.7:19]
plot "$out/bubble.csv" using 1:2 with lines dashtype 2 title "(p-1)/(m+p-1)", \
     "$out/bubble.csv" using 1:3 with linespoints title "1F1B measured", \
     "$out/bubble.csv" using 1:4 with linespoints title "zero-bubble measured"
GNUPLOT
ls "$out"/*.png
