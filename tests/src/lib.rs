//! placeholder

pub mod lossy_proxy;
pub mod order_service_process;
pub mod otlp_receiver;
pub mod status_client_process;
pub mod tls;
