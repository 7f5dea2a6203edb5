# Stage 2: the HDF5 feature cache, one file per representation and split.
#
# Networks: one job per network and split computes every configured node of that network in one
# forward pass (paper §3 inverts every AlexNet layer; the network runs once, not once per layer).
# The catalog groups the nodes (CATALOG.network_groups: same network, weights, crop and other
# parameters; the untrained control and each autoencoder's fine-tuned encoder are networks of
# their own) and names each group: network_features_alexnet, network_features_alexnet-random,
# network_features_efficientnet_lite0 … Each job writes features/{rep}/{split}.h5 of each of its
# nodes, and its parameters hold its own network's settings only, so a change to one network
# reruns that network's extraction and no other. A profile sets their resources under the one name
# network_features (share_profile_settings). HOG, SIFT and LBP: one `shallow_features` job per
# representation and split, on the CPU.
#
# features.store (per representation or family, resolved by the catalog):
#   cache     — the features are computed here and stored; with data.shards = N > 1 the training
#               split's caches are computed by N jobs per network (network_feature_shard_<network>,
#               each a contiguous range of rows of every node) or per shallow representation
#               (shallow_feature_shard), and copied into one file per representation by join_features.
#   recompute — feature_recipe writes a file holding only the cache's attributes; the jobs that
#               read it compute the features from the stored pixels (preimage.features.cache).
# Either way every later rule reads features/{rep}/{split}.h5 and cannot tell the difference.

FEATURE_RESOURCES = dict(mem_mb=8000, runtime=scaled_runtime(120))
#: The splits whose cache one job computes: both, or only the test split when the training
#: split is sharded (the test split, 2,000 images in the paper, is one job either way).
WHOLE_SPLITS = "train|test" if SHARDS == 1 else "test"
#: The cached nodes of the networks, by network: {group name: slugs}.
NETWORK_GROUPS = CATALOG.network_groups(store="cache")


for _group, _slugs in NETWORK_GROUPS.items():

    rule:
        name:
            f"network_features_{_group}"
        conda:
            ENVIRONMENT
        input:
            images=f"{R}/data/{{split}}.h5",
            encoders=PLAN.encoder_inputs(_slugs),
        output:
            [f"{R}/features/{slug}/{{split}}.h5" for slug in _slugs],
        params:
            **network_job_params(_slugs),
        threads: FEATURES["threads"]
        priority: EXTRACT_FIRST
        resources:
            **FEATURE_RESOURCES,
            gpu=1,
        wildcard_constraints:
            split=WHOLE_SPLITS,
        log:
            f"{R}/logs/features/{_group}/{{split}}.log",
        benchmark:
            f"{R}/benchmarks/features/{_group}/{{split}}.tsv"
        script:
            "../workflow/scripts/features_network.py"

    share_profile_settings(f"network_features_{_group}", "network_features")


rule shallow_features:
    conda:
        ENVIRONMENT
    input:
        images=f"{R}/data/{{split}}.h5",
    output:
        f"{R}/features/{{rep}}/{{split}}.h5",
    params:
        **feature_job_params(),
    threads: FEATURES["threads"]
    priority: EXTRACT_FIRST
    resources:
        **FEATURE_RESOURCES,
        gpu=0,
    wildcard_constraints:
        rep=alternation(PLAN.stored_slugs("cache", gpu=False)),
        split=WHOLE_SPLITS,
    log:
        f"{R}/logs/features/{{rep}}/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/features/{{rep}}/{{split}}.tsv"
    script:
        "../workflow/scripts/features_compute.py"


rule feature_recipe:
    """features.store: recompute — the cache's attributes only; readers compute the features."""
    conda:
        ENVIRONMENT
    input:
        images=f"{R}/data/{{split}}.h5",
        encoder=feature_extra_inputs,
    output:
        f"{R}/features/{{rep}}/{{split}}.h5",
    params:
        **feature_job_params(),
    resources:
        mem_mb=4000,
        runtime=scaled_runtime(30),
        gpu=0,
    wildcard_constraints:
        rep=alternation(PLAN.stored_slugs("recompute")),
    log:
        f"{R}/logs/features/{{rep}}/{{split}}.log",
    script:
        "../workflow/scripts/features_recipe.py"


if SHARDS > 1:

    for _group, _slugs in NETWORK_GROUPS.items():

        rule:
            name:
                f"network_feature_shard_{_group}"
            conda:
                ENVIRONMENT
            input:
                images=f"{R}/data/train.h5",
                encoders=PLAN.encoder_inputs(_slugs),
            output:
                [temp(f"{R}/features/{slug}/shards/train-{{shard}}.h5") for slug in _slugs],
            params:
                **network_job_params(_slugs),
                shard=lambda wc: shard_of(wc.shard),
            threads: FEATURES["threads"]
            resources:
                **FEATURE_RESOURCES,
                gpu=1,
            wildcard_constraints:
                shard=alternation(SHARD_IDS),
            log:
                f"{R}/logs/features/{_group}/train-{{shard}}.log",
            benchmark:
                f"{R}/benchmarks/features/{_group}/train-{{shard}}.tsv"
            script:
                "../workflow/scripts/features_network.py"

        share_profile_settings(f"network_feature_shard_{_group}", "network_feature_shard")

    rule shallow_feature_shard:
        conda:
            ENVIRONMENT
        input:
            images=f"{R}/data/train.h5",
        output:
            temp(f"{R}/features/{{rep}}/shards/train-{{shard}}.h5"),
        params:
            **feature_job_params(),
            shard=lambda wc: shard_of(wc.shard),
        threads: FEATURES["threads"]
        resources:
            **FEATURE_RESOURCES,
            gpu=0,
        wildcard_constraints:
            rep=alternation(PLAN.stored_slugs("cache", gpu=False)),
            shard=alternation(SHARD_IDS),
        log:
            f"{R}/logs/features/{{rep}}/train-{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/features/{{rep}}/train-{{shard}}.tsv"
        script:
            "../workflow/scripts/features_compute.py"

    rule join_features:
        conda:
            ENVIRONMENT
        input:
            shards=lambda wc: expand(f"{R}/features/{wc.rep}/shards/train-{{shard}}.h5", shard=SHARD_IDS),
        output:
            f"{R}/features/{{rep}}/train.h5",
        resources:
            mem_mb=4000,
            runtime=scaled_runtime(60),
            gpu=0,
        wildcard_constraints:
            rep=alternation(PLAN.stored_slugs("cache")),
        log:
            f"{R}/logs/features/{{rep}}/join.log",
        benchmark:
            f"{R}/benchmarks/features/{{rep}}/join.tsv"
        script:
            "../workflow/scripts/features_join.py"
