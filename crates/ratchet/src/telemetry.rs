//! Trace export over OTLP/gRPC, configured the way the OpenTelemetry specification names it.
//!
//! Export is on only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`, nor
//! `OTEL_TRACES_EXPORTER` `none`). Then the spans of the `tracing` subscriber also go,
//! batched, to that endpoint (`OTEL_BSP_SCHEDULE_DELAY` and friends tune the batching,
//! `OTEL_EXPORTER_OTLP_HEADERS` and `..._TIMEOUT` the exporter), under `OTEL_SERVICE_NAME`
//! or the role's default name; and W3C trace context is propagated in gRPC metadata and in
//! Raft log entries. Otherwise no layer is installed, the propagator stays OpenTelemetry's
//! no-op one, and nothing is exported or injected.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(std::time::Duration::from_secs(3));
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Whether the environment asks for trace export.
pub fn export_configured() -> bool {
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    endpoint.is_some() && !disabled
}

/// The OpenTelemetry layer for the subscriber, when export is configured. Must run inside
/// the Tokio runtime: the tonic exporter's channel lives there.
pub fn layer<S>(default_service: &str) -> anyhow::Result<Option<(OpenTelemetryLayer<S, SdkTracer>, Telemetry)>>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    if !export_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("ratchet");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some((tracing_opentelemetry::layer().with_tracer(tracer), Telemetry { provider })))
}
