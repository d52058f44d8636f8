from prost.catalog.tables import metadata
from prost.kit.migrations import run_env

run_env(metadata)
