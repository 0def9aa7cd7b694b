# otlp-receiver (from the tests crate): accepts OTLP/gRPC traces and appends every span as one
# JSON line to /spans/spans.jsonl, where the end-to-end suite reads them (`docker cp`).
# Scratch image with one statically linked binary and a non-root user; built by
# deploy/build-images.sh.
FROM scratch
COPY etc/passwd etc/group /etc/
COPY --chown=10001:10001 empty/ /spans/
COPY otlp-receiver /usr/local/bin/otlp-receiver
USER 10001:10001
EXPOSE 4317
ENTRYPOINT ["/usr/local/bin/otlp-receiver"]
CMD ["--addr", "0.0.0.0:4317", "--output", "/spans/spans.jsonl"]
