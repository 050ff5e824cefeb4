# syntax=docker/dockerfile:1
# Build: a release binary with everything (templates, static files, migrations) compiled in.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY templates templates
COPY static static
RUN cargo build --release --locked

# Run: a small image with CA certificates and no shell, as a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/callback-gate /usr/local/bin/callback-gate
WORKDIR /home/nonroot
# The default database_url (sqlite://callback-gate.db) lives here; mount a volume to keep it.
VOLUME ["/home/nonroot"]
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/callback-gate"]
CMD ["serve", "--config", "/etc/callback-gate/callback-gate.toml"]
