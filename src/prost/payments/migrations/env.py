from prost.kit.migrations import run_env
from prost.payments.tables import metadata

run_env(metadata)
