# Stage 5: the tables that gather every representation's numbers (Table 2 analogue and the
# perturbation and Mahendran & Vedaldi tables).


rule errors_table:
    conda:
        ENVIRONMENT
    input:
        errors=expand(f"{R}/{{rep}}/error.csv", rep=REPS),
    output:
        csv=report(f"{R}/tables/errors.csv", caption="../workflow/report/errors.rst", category="Errors"),
        md=f"{R}/tables/errors.md",
    log:
        f"{R}/logs/tables/errors.log",
    benchmark:
        f"{R}/benchmarks/tables/errors.tsv"
    script:
        "../workflow/scripts/tables_errors.py"


rule perturbation_table:
    conda:
        ENVIRONMENT
    input:
        expand(f"{R}/{{rep}}/analysis/perturbation.csv", rep=PLAN.perturbation_slugs()),
    output:
        csv=f"{R}/tables/perturbation.csv",
        md=f"{R}/tables/perturbation.md",
    log:
        f"{R}/logs/tables/perturbation.log",
    benchmark:
        f"{R}/benchmarks/tables/perturbation.tsv"
    script:
        "../workflow/scripts/tables_concat.py"


rule mahendran_vedaldi_table:
    conda:
        ENVIRONMENT
    input:
        expand(f"{R}/{{rep}}/mahendran_vedaldi.csv", rep=PLAN.mahendran_vedaldi_slugs()),
    output:
        csv=report(
            f"{R}/tables/mahendran_vedaldi.csv",
            caption="../workflow/report/mahendran_vedaldi_table.rst",
            category="Baselines",
        ),
        md=f"{R}/tables/mahendran_vedaldi.md",
    params:
        networks=CATALOG.networks(),  # the representations M&V's "≤ 20 %" is about (CNN layers)
    log:
        f"{R}/logs/tables/mahendran_vedaldi.log",
    benchmark:
        f"{R}/benchmarks/tables/mahendran_vedaldi.tsv"
    script:
        "../workflow/scripts/tables_mahendran_vedaldi.py"


rule locality_table:
    conda:
        ENVIRONMENT
    input:
        expand(f"{R}/{{rep}}/analysis/locality.csv", rep=PLAN.analysis_slugs("locality")),
    output:
        csv=f"{R}/tables/locality.csv",
        md=f"{R}/tables/locality.md",
    log:
        f"{R}/logs/tables/locality.log",
    benchmark:
        f"{R}/benchmarks/tables/locality.tsv"
    script:
        "../workflow/scripts/tables_concat.py"
