# Stage 5: probes of the feature spaces (paper §4, §5.3-5.5). Every job runs a trained decoder,
# so every job asks for a GPU (it runs on the CPU where there is none).

ANALYSIS_RESOURCES = dict(mem_mb=8000, runtime=scaled_runtime(60), gpu=1)


rule perturbation:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/test.h5",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/{{rep}}/analysis/perturbation.csv",
        figure=report(
            f"{R}/figures/perturbation_{{rep}}.png",
            caption="../workflow/report/perturbation.rst",
            category="Analyses",
            subcategory="Perturbation",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.perturbation_slugs()),
    params:
        common=analysis_params(),
        fraction=ANALYSES["perturbation"]["fraction"],
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/perturbation_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/analyses/{{rep}}/perturbation.tsv"
    script:
        "../workflow/scripts/analyses_perturbation.py"


rule interpolation:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/test.h5",
    output:
        strips=f"{R}/{{rep}}/analysis/interpolation.h5",
        figure=report(
            f"{R}/figures/interpolation_{{rep}}.png",
            caption="../workflow/report/interpolation.rst",
            category="Analyses",
            subcategory="Interpolation",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.analysis_slugs("interpolation")),
    params:
        common=analysis_params(),
        pairs=ANALYSES["interpolation"]["pairs"],
        steps=ANALYSES["interpolation"]["steps"],
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/interpolation_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/analyses/{{rep}}/interpolation.tsv"
    script:
        "../workflow/scripts/analyses_interpolation.py"


rule random_samples:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/train.h5",
    output:
        csv=f"{R}/{{rep}}/analysis/random_samples.csv",
        figure=report(
            f"{R}/figures/random_samples_{{rep}}.png",
            caption="../workflow/report/random_samples.rst",
            category="Analyses",
            subcategory="Random feature vectors",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.analysis_slugs("random_samples")),
    params:
        common=analysis_params(),
        options={k: v for k, v in ANALYSES["random_samples"].items() if k != "layers"},
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/random_samples_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/analyses/{{rep}}/random_samples.tsv"
    script:
        "../workflow/scripts/analyses_random_samples.py"


rule single_units:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/train.h5",
    output:
        report(
            f"{R}/figures/single_units_{{rep}}.png",
            caption="../workflow/report/single_units.rst",
            category="Analyses",
            subcategory="Single units",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.single_unit_slugs()),
    params:
        common=analysis_params(),
        units=ANALYSES["single_units"]["count"],
        representation=lambda wc: PLAN.options(wc.rep),
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/single_units_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/analyses/{{rep}}/single_units.tsv"
    script:
        "../workflow/scripts/analyses_single_units.py"


rule dark_knowledge:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/test.h5",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/{{rep}}/analysis/dark_knowledge.csv",
        figure=report(
            f"{R}/figures/dark_knowledge_{{rep}}.png",
            caption="../workflow/report/dark_knowledge.rst",
            category="Analyses",
            subcategory="Dark knowledge",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.analysis_slugs("dark_knowledge")),
    params:
        common=analysis_params(),
        k=ANALYSES["dark_knowledge"]["k"],
        representation=lambda wc: PLAN.options(wc.rep),
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/dark_knowledge_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/analyses/{{rep}}/dark_knowledge.tsv"
    script:
        "../workflow/scripts/analyses_dark_knowledge.py"


rule hue_shift:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/{{rep}}/analysis/hue_shift.csv",
        figure=report(
            f"{R}/figures/hue_shift_{{rep}}.png",
            caption="../workflow/report/hue_shift.rst",
            category="Analyses",
            subcategory="Hue shift",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.analysis_slugs("hue_shift")),
    params:
        common=analysis_params(),
        degrees=ANALYSES["hue_shift"]["degrees"],
        representation=lambda wc: PLAN.options(wc.rep),
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/hue_shift_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/analyses/{{rep}}/hue_shift.tsv"
    script:
        "../workflow/scripts/analyses_hue_shift.py"


rule brightness:
    conda:
        ENVIRONMENT
    input:
        decoder=f"{R}/hog/decoder.pt",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/hog/analysis/brightness.csv",
        figure=report(
            f"{R}/figures/brightness.png",
            caption="../workflow/report/brightness.rst",
            category="Analyses",
            subcategory="Brightness",
        ),
    params:
        common=analysis_params(),
        factors=ANALYSES["brightness"]["factors"],
        representation=PLAN.options("hog") if "hog" in CATALOG else None,
    threads: ANALYSES["threads"]
    resources:
        **ANALYSIS_RESOURCES,
    log:
        f"{R}/logs/analyses/brightness.log",
    benchmark:
        f"{R}/benchmarks/analyses/hog/brightness.tsv"
    script:
        "../workflow/scripts/analyses_brightness.py"
