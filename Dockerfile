# syntax=docker/dockerfile:1
# Build: a release binary with everything it serves compiled in. The build reads, beside Cargo.toml, Cargo.lock and
# build.rs: src/, templates/ (askama), locales/ (fluent-templates), static/ (the stylesheet) and migrations/
# (include_str!). tests/container.rs fails when one of them is not copied here or is left out by .dockerignore.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY templates templates
COPY locales locales
COPY static static
COPY migrations migrations
# The crate registry and the target folder are caches kept between builds (BuildKit), so a change to the sources
# does not download and compile every dependency again; the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/callback-gate /usr/local/bin/callback-gate

# Run: a small image with CA certificates and no shell, as a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/callback-gate /usr/local/bin/callback-gate
WORKDIR /home/nonroot
# The default database_url (sqlite://callback-gate.db) lives here; mount a volume to keep it. With PostgreSQL
# (database_url = "postgres://..."), nothing is written here.
VOLUME ["/home/nonroot"]
EXPOSE 8080
USER nonroot:nonroot
# callback-gate is PID 1 and handles SIGTERM itself: it stops accepting connections and lets in-flight requests
# finish (a callback's token exchange takes at most token_timeout_seconds, 10 s by default) before it exits.
ENTRYPOINT ["/usr/local/bin/callback-gate"]
CMD ["serve", "--config", "/etc/callback-gate/callback-gate.toml"]
