# Configuration validation, targets and wildcard constraints shared by every rule file.
import re
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
FEATURES = config["features"]


def rep_slug(name):
    """File-system name of a representation: torchvision:resnet50:layer4 → resnet50@layer4."""
    if name.startswith("torchvision:"):
        _, model, node = name.split(":", 2)
        return f"{model}@{node}"
    return name


REPS = {rep_slug(name): name for name in config["representations"]}


def rep_family(name):
    """The config section under features: that parameterises a representation."""
    if name in ("hog", "lbp", "sift"):
        return name
    if name.startswith("torchvision:"):
        return "torchvision"
    return "alexnet"


def feature_params(slug):
    """Parameters of one representation: only its own family's keys, so that changing hog's
    parameters reruns hog's cache and nothing else."""
    return dict(FEATURES[rep_family(REPS[slug])])


def per_rep(value, slug):
    """A config value that is either one value or a mapping {default: v, <rep>: v}."""
    if isinstance(value, dict):
        return value.get(slug, value.get(REPS.get(slug, slug), value.get("default")))
    return value


def train_params(slug):
    """Training and decoder parameters of one representation (only its own epochs/width)."""
    cfg = {k: v for k, v in config["train"].items() if k != "threads"}
    cfg["epochs"] = per_rep(cfg["epochs"], slug)
    cfg["width"] = per_rep(config["decoder"]["width"], slug)
    cfg["upsample"] = config["decoder"]["upsample"]
    return cfg


def uses_gpu(slug):
    return rep_family(REPS[slug]) in ("alexnet", "torchvision")


wildcard_constraints:
    split="train|test",
    rep="|".join(re.escape(slug) for slug in REPS) or "(?!)",


def data_params():
    """Every data.* value that changes the extracted images (threads/log_every excluded)."""
    return {k: v for k, v in DATA.items() if k not in ("threads", "log_every")}


def all_targets():
    targets = [f"{R}/data/train.h5", f"{R}/data/test.h5"]
    targets += expand(f"{R}/features/{{rep}}/{{split}}.h5", rep=list(REPS), split=["train", "test"])
    targets += expand(f"{R}/{{rep}}/{{file}}", rep=list(REPS), file=["error.csv", "reconstructions.png"])
    targets += aggregate_targets()
    return targets


def alexnet_slugs():
    return [s for s in REPS if rep_family(REPS[s]) == "alexnet"]


def shallow_slugs():
    return [s for s in ("hog", "sift", "lbp") if s in REPS]


def aggregate_targets():
    if not REPS:
        return []
    targets = [f"{R}/tables/errors.csv", f"{R}/tables/errors.md"]
    if alexnet_slugs():
        targets += [f"{R}/figures/error_by_layer.png", f"{R}/figures/reconstructions_alexnet.png"]
    if shallow_slugs():
        targets.append(f"{R}/figures/reconstructions_shallow.png")
    return targets
