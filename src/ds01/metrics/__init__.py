"""ds01d's Prometheus metrics (issue 17, item 1; docs/metrics.md).

Owns the metric names, their labels and the HTTP endpoint that serves them. Every value is
built at scrape time from what ds01d already keeps — the latest MachineSample, the live
allocations view, the host process watch — and a few cheap SQLite reads: no NVML, no
Docker and no subprocess per scrape (BRIEF §3, STYLE 4). The only module that imports
prometheus_client.
"""
