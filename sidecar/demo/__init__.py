"""`sidecar demo`: a whole local mesh in one command.

The seed's three services (user, trading, portfolio) run as small aiohttp apps, each
behind its own `sidecar run` process; a paced client drives traffic into the sidecars'
inbound listeners, and the summary compares what the client saw with what each sidecar's
metrics say about every hop.

    apps.py      the three sample services (`python -m sidecar.demo.apps <name>`)
    topology.py  fixed port layout and the sidecar configs written from it
    children.py  child processes: start, wait for health, stop cleanly
    traffic.py   the paced load generator and its per-entry-path results
    progress.py  the live one-line progress display
    summary.py   Prometheus text → per-hop counts and quantiles; the printed report
    runner.py    `run_demo`: the order of all of the above

The entry point is `sidecar.demo.runner` (`add_arguments`, `run_demo`, `main`). It is
not re-exported here on purpose: the sample apps import this package too, and they
should not pay for the runner's imports.
"""
