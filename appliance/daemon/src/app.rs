//! Everything a request needs, built once at start-up and shared by every transport.

use std::sync::Arc;

use dg_engine::evidence::TrustRequirement;
use dg_engine::validation::StrictValidationConfig;
use dg_engine::EngineConfig;
use dg_providers::BuiltinProviders;
use dg_storage::runpack_backend::RunpackBackend;
use dg_storage::signing::KeyStore;
use dg_storage::StateStore;

use crate::clock_watch::ClockWatch;
use crate::config::Config;
use crate::export_roots::ExportRoots;
use crate::metrics::Metrics;
use crate::oidc::OidcVerifier;
use crate::slo::SloSeries;

/// Shared application state.
pub struct App {
    /// The configuration in force.
    pub config: Config,
    /// Durable state.
    pub store: Arc<dyn StateStore>,
    /// Configured evidence providers.
    pub providers: BuiltinProviders,
    /// Engine settings derived from the config.
    pub engine: EngineConfig,
    /// Strict validation settings.
    pub strict: Option<StrictValidationConfig>,
    /// Where runpacks are kept (`[runpacks] backend`: the hardened filesystem tree or S3).
    pub runpacks: Arc<dyn RunpackBackend>,
    /// Client export roots (`[runpacks] client_export_roots`; none by default).
    pub export_roots: ExportRoots,
    /// Bundle signing keys.
    pub keys: Arc<KeyStore>,
    /// Counters for /metrics.
    pub metrics: Metrics,
    /// Bearer JWTs from the site's identity provider (`[auth.oidc]`; none by default).
    pub oidc: Option<Arc<OidcVerifier>>,
    /// The series the SLOs and their alerts need (`slo.rs`).
    pub slo: SloSeries,
    /// Trusted time: steps of the wall clock (`clock_watch.rs`).
    pub clock: ClockWatch,
    /// Audit forwarding's counters, when `[audit.forward]` is configured (`forward/`).
    pub forwarding: Option<Arc<crate::forward::ForwardMetrics>>,
}

impl App {
    /// Wires the parts together.
    #[must_use]
    pub fn new(
        config: Config,
        store: Arc<dyn StateStore>,
        providers: BuiltinProviders,
        runpacks: Arc<dyn RunpackBackend>,
        keys: Arc<KeyStore>,
    ) -> Self {
        let engine = EngineConfig {
            trust_requirement: TrustRequirement { min_lane: config.engine.min_lane },
            ..EngineConfig::default()
        };
        let config_time_bound = config.time.readiness_bound_s;
        let strict = config.validation.strict.then_some(StrictValidationConfig {
            enable_lexicographic: config.validation.enable_lexicographic,
            enable_deep_equals: config.validation.enable_deep_equals,
        });
        Self {
            config,
            store,
            providers,
            engine,
            strict,
            runpacks,
            export_roots: ExportRoots::default(),
            keys,
            metrics: Metrics::default(),
            oidc: None,
            slo: SloSeries::default(),
            clock: ClockWatch::new(config_time_bound),
            forwarding: None,
        }
    }
}
