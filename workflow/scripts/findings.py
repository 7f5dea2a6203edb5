"""Snakemake adapter: rule findings → preimage.findings.write_findings."""
from preimage import logs
from preimage.findings import write_findings

logs.setup(snakemake.log[0])
write_findings({k: v for k, v in snakemake.input.items()}, snakemake.output[0])
