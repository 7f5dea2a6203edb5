# Configuration validation, targets and wildcard constraints shared by every rule file.
import sys

from preimage.config import ConfigError, load_schema, validate_config

try:
    _validated = validate_config(config, load_schema(workflow.source_path("../workflow/schemas/config.schema.yaml")))
except ConfigError as _err:
    sys.stderr.write(f"preimage: {_err}\n")
    raise SystemExit(1)
config.clear()
config.update(_validated)

R = config["results"]
DATA = config["data"]

wildcard_constraints:
    split="train|test",


def data_params():
    """Every data.* value that changes the extracted images (threads/log_every excluded)."""
    return {k: v for k, v in DATA.items() if k not in ("threads", "log_every")}


def all_targets():
    return [f"{R}/data/train.h5", f"{R}/data/test.h5"]
