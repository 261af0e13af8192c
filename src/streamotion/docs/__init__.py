"""The documentation site's generated pages (``streamotion docs generate|check``, ``make docs``).

``pages.generated(root)`` renders every page that is made from the code (the API, the CLI, the
metrics, the Helm values, the benchmarks); ``reasons`` lists the condition reasons the operator can
report (Troubleshooting documents each); ``shell`` finds the commands the pages show (each is run by
a test or has a reason why not: tests/test_docs.py).
"""
