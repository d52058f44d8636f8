from prost.kit.migrations import run_env
from prost.orders.tables import metadata

run_env(metadata)
