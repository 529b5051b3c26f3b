"""archdsl.search: hardware-aware architecture search on Ray Tune (stage 6 of the pipeline).

    space.py      a spec's choice points as a define-by-run search space; canonical network hashes
    searcher.py   Optuna (TPE, random, NSGA-II) ask-and-tell behind Ray Tune's Searcher; rejects, dedupes,
                  prefilters with the latency predictor before any trial starts
    trial.py      one trial (check -> measure the deploy form on a target node -> train or score) and the
                  LatencyMeter actor
    driver.py     `run_search(SearchConfig)`: the whole search, resume, outputs
    records.py    the output directory: locked, append-only checksummed records, CSV
    pareto.py     Pareto front, hypervolume, top-k, the plot
    data.py, train.py, proxy.py   accuracy: offline datasets (data_files.py: folder:/npz:), the training recipe,
                  zero-cost proxies
    train_cmd.py  `archdsl train`: one concrete network trained to the end, checkpoints, test accuracy
    predictor.py  the latency table as a prefilter
    cluster.py    Ray embedded on 127.0.0.1 or an existing cluster; the target-hardware marker
    cli.py        `archdsl search`
    report.py     `archdsl report`: one self-contained HTML page of a run (report_plots.py: its SVG plots)

Importing this package imports neither Ray nor torch; the modules that need them import them.
"""
