"""The PySpark worker daemon, with the job's heavy imports done once before it forks workers
(``spark.python.daemon.module``): each Python worker starts with pandas, pyarrow, pydantic and the
job's modules already loaded instead of importing them itself."""

import pandas  # noqa: F401
import pyarrow  # noqa: F401
import requests  # noqa: F401
from pyspark import daemon

import streamotion_jobs.classify
import streamotion_jobs.transform  # noqa: F401

if __name__ == "__main__":
    daemon.manager()
