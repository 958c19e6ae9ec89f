# ngx_defarm_module: production image.
#
#   docker build --build-arg GIT_HASH=$(git rev-parse HEAD) -t defarm .
#   docker run -p 8080:8080 -e DEFARM_JWT_SECRET="$(head -c 48 /dev/urandom | base64)" defarm
#
# The build stage compiles the module against the nginx-dev source of the
# very nginx the runtime stage installs (both bookworm), which is what a
# dynamic module requires.

FROM debian:bookworm AS build

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential nginx-dev libpq-dev libhiredis-dev libjwt-dev \
        libyajl-dev libcrypt-dev libssl-dev libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY config Makefile VERSION ./
COPY src/ src/
COPY scripts/gen_version.sh scripts/

ARG GIT_HASH=unknown
ARG BUILD_TIME=
RUN GIT_HASH="$GIT_HASH" BUILD_TIME="$BUILD_TIME" make


FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        nginx-core libpq5 libhiredis0.14 libjwt0 libyajl2 libcrypt1 libcurl4 \
        postgresql-client curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The same layout as the repository, so conf/defarm.conf works unchanged
# with /opt/defarm as nginx's prefix; in a container it listens on all
# addresses and logs to the container's output.
WORKDIR /opt/defarm
COPY --from=build /src/build/ngx_defarm_module.so build/
COPY conf/ conf/
COPY sql/ sql/
COPY scripts/migrate.sh scripts/

# The token secret comes from the environment at start (docker run -e
# DEFARM_JWT_SECRET=...), read by the master before the workers start.
# No attestation key is baked into the image (every container would share
# it): /api/proofs answers 503 until one is mounted and the directive
# uncommented.
RUN sed -i -e 's/listen 127\.0\.0\.1:8080;/listen 8080;/' \
        -e 's#^error_log .*#error_log /dev/stderr info;#' \
        -e 's#access_log var/log/access.log#access_log /dev/stdout#' \
        -e 's#defarm_jwt_secret file=var/jwt.secret;#defarm_jwt_secret env=DEFARM_JWT_SECRET;#' \
        -e 's#^\( *\)defarm_attestation_key .*#\1\# defarm_attestation_key file=/run/secrets/attestation.pem;#' \
        conf/defarm.conf \
    && printf 'env DEFARM_JWT_SECRET;\n' >> conf/defarm.conf \
    && mkdir -p var/log var/tmp \
    && chown -R www-data:www-data var \
    && sed -i '1i user www-data;' conf/defarm.conf \
    && DEFARM_JWT_SECRET=configuration-check-only-not-a-secret-0123456789 \
       nginx -p /opt/defarm/ -c conf/defarm.conf -t

ARG GIT_HASH=unknown
LABEL org.opencontainers.image.revision="$GIT_HASH"

EXPOSE 8080
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health >/dev/null || exit 1

CMD ["nginx", "-p", "/opt/defarm/", "-c", "conf/defarm.conf", \
     "-g", "daemon off;"]
