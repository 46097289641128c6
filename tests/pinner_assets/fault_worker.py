"""A pipeline run in its own process, for the fault tests (concurrency, kill -9).

`python -m tests.pinner_assets.fault_worker DATA_DIR FILES_DIR DAGSTER_HOME FIRST LAST ASSETS`
materialises ASSETS (comma-separated) for days FIRST..LAST (indices from DAY0) of the files
source, on the Dagster instance in DAGSTER_HOME shared with the test process.
"""

import sys
import warnings
from pathlib import Path

import dagster as dg

warnings.filterwarnings("ignore")

from pinner_assets.lib.resources import ActionSource  # noqa: E402
from tests.pinner_assets.conftest import Pipeline, day, make_resources  # noqa: E402


def main(data: str, files: str, home: str, first: int, last: int, assets: str) -> None:
    source = ActionSource(kind="files", path=files)
    with dg.instance_for_test(temp_dir=home) as instance:
        p = Pipeline(make_resources(Path(data), source), instance)
        p.run(assets.split(","), day(first), day(last))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
