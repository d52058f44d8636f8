from prost.kit.migrations import run_env
from prost.users.tables import metadata

run_env(metadata)
