# Stage 5: probes of the feature spaces (paper §4, §5.3-5.5) and the "what we found" summary.


rule perturbation:
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/test.h5",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/{{rep}}/analysis/perturbation.csv",
        figure=report(f"{R}/figures/perturbation_{{rep}}.png", caption="../workflow/report/perturbation.rst",
                      category="Analyses", subcategory="Perturbation"),
    wildcard_constraints:
        rep=alternation(perturbation_slugs()),
    params:
        common=analysis_params(),
        fraction=ANALYSES["perturbation"]["fraction"],
    threads: ANALYSES["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
        gpu=1,
    log:
        f"{R}/logs/analyses/perturbation_{{rep}}.log",
    script:
        "../workflow/scripts/analysis_perturbation.py"


rule perturbation_table:
    input:
        lambda wc: expand(f"{R}/{{rep}}/analysis/perturbation.csv", rep=perturbation_slugs()),
    output:
        csv=f"{R}/tables/perturbation.csv",
        md=f"{R}/tables/perturbation.md",
    log:
        f"{R}/logs/tables/perturbation.log",
    script:
        "../workflow/scripts/concat_tables.py"


rule interpolation:
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/test.h5",
    output:
        strips=f"{R}/{{rep}}/analysis/interpolation.h5",
        figure=report(f"{R}/figures/interpolation_{{rep}}.png", caption="../workflow/report/interpolation.rst",
                      category="Analyses", subcategory="Interpolation"),
    wildcard_constraints:
        rep=alternation(interpolation_slugs()),
    params:
        common=analysis_params(),
        pairs=ANALYSES["interpolation"]["pairs"],
        steps=ANALYSES["interpolation"]["steps"],
    threads: ANALYSES["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
    log:
        f"{R}/logs/analyses/interpolation_{{rep}}.log",
    script:
        "../workflow/scripts/analysis_interpolation.py"


rule interpolation_overview:
    input:
        lambda wc: expand(f"{R}/{{rep}}/analysis/interpolation.h5", rep=interpolation_slugs()),
    output:
        report(f"{R}/figures/interpolation.png", caption="../workflow/report/interpolation.rst", category="Analyses",
               subcategory="Interpolation"),
    params:
        representations=interpolation_slugs(),
    log:
        f"{R}/logs/figures/interpolation.log",
    script:
        "../workflow/scripts/figure_interpolation.py"


rule random_samples:
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/train.h5",
    output:
        csv=f"{R}/{{rep}}/analysis/random_samples.csv",
        figure=report(f"{R}/figures/random_samples_{{rep}}.png", caption="../workflow/report/random_samples.rst",
                      category="Analyses", subcategory="Random feature vectors"),
    wildcard_constraints:
        rep=alternation(random_sample_slugs()),
    params:
        common=analysis_params(),
        options=ANALYSES["random_samples"],
    threads: ANALYSES["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
    log:
        f"{R}/logs/analyses/random_samples_{{rep}}.log",
    script:
        "../workflow/scripts/analysis_random_samples.py"


rule single_units:
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        features=f"{R}/features/{{rep}}/train.h5",
    output:
        report(f"{R}/figures/single_units_{{rep}}.png", caption="../workflow/report/single_units.rst",
               category="Analyses", subcategory="Single units"),
    wildcard_constraints:
        rep=alternation(single_unit_slugs()),
    params:
        common=analysis_params(),
        units=ANALYSES["single_units"]["count"],
        representation=lambda wc: representation_options(wc.rep),
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
    log:
        f"{R}/logs/analyses/single_units_{{rep}}.log",
    script:
        "../workflow/scripts/analysis_single_units.py"


rule dark_knowledge:
    input:
        decoder=f"{R}/fc8/decoder.pt",
        features=f"{R}/features/fc8/test.h5",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/fc8/analysis/dark_knowledge.csv",
        figure=report(f"{R}/figures/dark_knowledge.png", caption="../workflow/report/dark_knowledge.rst",
                      category="Analyses", subcategory="Dark knowledge"),
    params:
        common=analysis_params(),
        k=ANALYSES["dark_knowledge"]["k"],
        representation=representation_options("fc8") if "fc8" in REPS else None,
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
    log:
        f"{R}/logs/analyses/dark_knowledge.log",
    script:
        "../workflow/scripts/analysis_dark_knowledge.py"


rule hue_shift:
    input:
        decoder=f"{R}/fc8/decoder.pt",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/fc8/analysis/hue_shift.csv",
        figure=report(f"{R}/figures/hue_shift.png", caption="../workflow/report/hue_shift.rst", category="Analyses",
                      subcategory="Hue shift"),
    params:
        common=analysis_params(),
        degrees=ANALYSES["hue_shift"]["degrees"],
        representation=representation_options("fc8") if "fc8" in REPS else None,
    threads: ANALYSES["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
        gpu=1,
    log:
        f"{R}/logs/analyses/hue_shift.log",
    script:
        "../workflow/scripts/analysis_hue_shift.py"


rule brightness:
    input:
        decoder=f"{R}/hog/decoder.pt",
        images=f"{R}/data/test.h5",
    output:
        csv=f"{R}/hog/analysis/brightness.csv",
        figure=report(f"{R}/figures/brightness.png", caption="../workflow/report/brightness.rst", category="Analyses",
                      subcategory="Brightness"),
    params:
        common=analysis_params(),
        factors=ANALYSES["brightness"]["factors"],
        representation=representation_options("hog") if "hog" in REPS else None,
    threads: ANALYSES["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
    log:
        f"{R}/logs/analyses/brightness.log",
    script:
        "../workflow/scripts/analysis_brightness.py"


def findings_inputs(wc):
    inputs = {"errors": f"{R}/tables/errors.csv"}
    optional = {
        "perturbation": (f"{R}/tables/perturbation.csv", perturbation_slugs()),
        "mahendran_vedaldi": (f"{R}/tables/mahendran_vedaldi.csv", mv_slugs()),
        "dark_knowledge": (f"{R}/fc8/analysis/dark_knowledge.csv", "fc8" in BASE_REPS and ANALYSES["dark_knowledge"]["enabled"]),
        "hue_shift": (f"{R}/fc8/analysis/hue_shift.csv", "fc8" in BASE_REPS and ANALYSES["hue_shift"]["enabled"]),
        "brightness": (f"{R}/hog/analysis/brightness.csv", "hog" in BASE_REPS and ANALYSES["brightness"]["enabled"]),
    }
    inputs.update({k: path for k, (path, wanted) in optional.items() if wanted})
    return inputs


rule findings:
    input:
        unpack(findings_inputs),
    output:
        report(f"{R}/findings.md", caption="../workflow/report/findings.rst", category="Summary"),
    log:
        f"{R}/logs/findings.log",
    script:
        "../workflow/scripts/findings.py"
