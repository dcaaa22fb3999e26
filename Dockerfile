# convoy as a container: the web page's map library from npm, the binary with the Rust
# image (embedding the library), run on a slim Debian.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json web/build.mjs ./
RUN npm ci --no-audit --no-fund && npm run build

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
COPY --from=web /web/dist web/dist
RUN cargo build --release --locked --bin convoy

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /var/lib/convoy --create-home convoy
COPY --from=build /src/target/release/convoy /usr/local/bin/convoy
USER convoy
WORKDIR /var/lib/convoy
# The SQLite file and the JWT secret convoy generates beside it (no JWT_SECRET set) live
# here: keep it on a volume so tokens and sessions survive a new container.
VOLUME ["/var/lib/convoy"]
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
# No curl in the slim image: bash's /dev/tcp asks /health/live.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health/live HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["convoy"]
