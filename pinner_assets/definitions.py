"""The Dagster code location. Assembles assets, resources, schedules and sensors."""

import dagster as dg

defs = dg.Definitions(assets=[])
