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
RUN useradd --system --home /var/lib/convoy --create-home convoy
COPY --from=build /src/target/release/convoy /usr/local/bin/convoy
USER convoy
WORKDIR /var/lib/convoy
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
ENTRYPOINT ["convoy"]
