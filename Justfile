# Developer recipes. Each is a one-liner you can also run by hand.

# The quick local loop (under 5 minutes on a warm build): format check, lints, the module
# cycle check, and the unit and property tests (no system tests, benchmarks, fuzzing or
# packaging; `just test` runs everything).
check:
    bash scripts/check.sh

# Full test suite, as CI runs it.
test:
    bash scripts/test-all.sh

# Format check and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks, built with the release settings (the shipped binary); each prints its figures.
bench:
    bash -c 'source scripts/release-env.sh && cargo bench --workspace --target "$DG_RELEASE_TARGET"'

# Everything CI does, on this checkout.
ci:
    CI=true bash .ci/run

# Fuzz the bundle reader for N seconds (default 60).
fuzz seconds="60":
    bash scripts/fuzz.sh {{seconds}}

# The static, reproducible release binary, .deb, .rpm and the signed offline bundle (dist/).
release:
    bash scripts/release.sh

# Packaging checks: reproducibility, unit hardening, rpm contents, booted install test.
package-test:
    bash scripts/test-packaging.sh

# The FIPS build (fips/README.md): static binary and dg-appliance-fips .deb/.rpm in dist/fips/.
release-fips:
    bash scripts/release-fips.sh
