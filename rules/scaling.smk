# Stage 5b: the data-scaling curve (beyond the paper). For every layer of analyses.scaling.layers
# the decoder is trained again on nested subsets of the training photographs (scaling_train, the
# training job's settings with train.subset), every decoder (its own one included, fraction 1) is
# scored per test image (scaling_errors), and scaling_table fits and extrapolates the power law.

SCALING = ANALYSES["scaling"]


rule scaling_train:
    conda:
        ENVIRONMENT
    input:
        features=f"{R}/features/{{rep}}/train.h5",
        images=f"{R}/data/train.h5",
    output:
        decoder=f"{R}/{{rep}}/scaling/{{fraction}}/decoder.pt",
        log=f"{R}/{{rep}}/scaling/{{fraction}}/train_log.csv",
    params:
        representation=lambda wc: CATALOG[wc.rep].name,
        train=lambda wc: CATALOG.train_params(wc.rep),
        subset=lambda wc: float(wc.fraction),
        checkpoint=lambda wc: f"{R}/checkpoints/{wc.rep}/scaling-{wc.fraction}.pt",
    wildcard_constraints:
        rep=alternation(PLAN.analysis_slugs("scaling")),
        fraction=alternation(PLAN.scaling_fractions()),
    threads: config["train"]["threads"]
    resources:
        mem_mb=16000,
        runtime=scaled_runtime(480),
        gpu=1,
    log:
        f"{R}/logs/scaling/train_{{rep}}_{{fraction}}.log",
    benchmark:
        f"{R}/benchmarks/scaling/{{rep}}/train_{{fraction}}.tsv"
    script:
        "../workflow/scripts/train_decoder.py"


rule scaling_errors:
    conda:
        ENVIRONMENT
    input:
        decoder=lambda wc: PLAN.scaling_decoder(wc.rep, wc.fraction),
        features=f"{R}/features/{{rep}}/test.h5",
        images=f"{R}/data/test.h5",
    output:
        f"{R}/{{rep}}/scaling/{{fraction}}/errors.csv",
    params:
        batch_size=config["evaluate"]["batch_size"],
        device=config["evaluate"]["device"],
    wildcard_constraints:
        rep=alternation(PLAN.analysis_slugs("scaling")),
        fraction=alternation(PLAN.scaling_fractions() + ["1"]),
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
        gpu=1,
    log:
        f"{R}/logs/scaling/errors_{{rep}}_{{fraction}}.log",
    benchmark:
        f"{R}/benchmarks/scaling/{{rep}}/errors_{{fraction}}.tsv"
    script:
        "../workflow/scripts/scaling_errors.py"


rule scaling_table:
    conda:
        ENVIRONMENT
    input:
        errors=[path for paths in PLAN.scaling_error_files().values() for path in paths],
        references=list(PLAN.scaling_references().values()),
    output:
        curve=report(f"{R}/tables/scaling.csv", category="Tables"),
        fit=f"{R}/tables/scaling_fit.csv",
        md=f"{R}/tables/scaling.md",
        figure=report(f"{R}/figures/scaling.png", caption="../workflow/report/scaling.rst", category="Analyses"),
    params:
        errors=PLAN.scaling_error_files(),
        references=PLAN.scaling_references(),
        extrapolate_to=SCALING["extrapolate_to"],
        seed=config["evaluate"]["seed"],
    log:
        f"{R}/logs/scaling/table.log",
    benchmark:
        f"{R}/benchmarks/scaling/table.tsv"
    script:
        "../workflow/scripts/scaling_table.py"
