# convoy as a container: build with the Rust image, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin convoy

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/convoy --create-home convoy
COPY --from=build /src/target/release/convoy /usr/local/bin/convoy
USER convoy
WORKDIR /var/lib/convoy
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
ENTRYPOINT ["convoy"]
