# Stage 4: reconstruction error on the test images (paper §5.1) and the aggregates
# (Table 2 and Figures 3, 5, 7 analogues).


rule evaluate:
    input:
        decoder=f"{R}/{{rep}}/decoder.pt",
        test_features=f"{R}/features/{{rep}}/test.h5",
        test_images=f"{R}/data/test.h5",
        train_features=f"{R}/features/{{rep}}/train.h5",
        train_images=f"{R}/data/train.h5",
    output:
        error=f"{R}/{{rep}}/error.csv",
        reconstructions=f"{R}/{{rep}}/reconstructions.h5",
        figure=report(
            f"{R}/{{rep}}/reconstructions.png",
            caption="../workflow/report/reconstructions.rst",
            category="Reconstructions",
            subcategory="{rep}",
        ),
    params:
        representation=lambda wc: display_name(wc.rep),
        options=config["evaluate"],
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=8000,
        runtime=scaled_runtime(60),
        gpu=1,
    log:
        f"{R}/logs/evaluate/{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{rep}}.tsv"
    script:
        "../workflow/scripts/evaluate_decoder.py"


rule errors_table:
    input:
        errors=lambda wc: expand(f"{R}/{{rep}}/error.csv", rep=list(REPS)),
    output:
        csv=report(f"{R}/tables/errors.csv", caption="../workflow/report/errors.rst", category="Errors"),
        md=f"{R}/tables/errors.md",
    log:
        f"{R}/logs/tables/errors.log",
    script:
        "../workflow/scripts/errors_table.py"


rule error_by_layer:
    input:
        table=f"{R}/tables/errors.csv",
        perturbation=lambda wc: [f"{R}/tables/perturbation.csv"] if perturbation_slugs() else [],
    output:
        report(f"{R}/figures/error_by_layer.png", caption="../workflow/report/error_by_layer.rst", category="Errors"),
    log:
        f"{R}/logs/figures/error_by_layer.log",
    script:
        "../workflow/scripts/figure_error_by_layer.py"


rule reconstructions_figure:
    input:
        test_images=f"{R}/data/test.h5",
        reconstructions=lambda wc: expand(
            f"{R}/{{rep}}/reconstructions.h5", rep=shallow_slugs() if wc.group == "shallow" else alexnet_slugs()
        ),
    output:
        report(
            f"{R}/figures/reconstructions_{{group}}.png",
            caption="../workflow/report/reconstructions_group.rst",
            category="Reconstructions",
        ),
    wildcard_constraints:
        group="shallow|alexnet",
    params:
        n_show=config["evaluate"]["n_show"],
        representations=lambda wc: shallow_slugs() if wc.group == "shallow" else alexnet_slugs(),
    log:
        f"{R}/logs/figures/reconstructions_{{group}}.log",
    script:
        "../workflow/scripts/figure_reconstructions.py"
