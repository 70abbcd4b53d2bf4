#!/usr/bin/env bash
# Builds the real Kubernetes control plane Ebb is tested against, from pinned Go
# modules through the Go module proxy, with the installed Go:
#   etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubectl, kwok;
#   with --with-helm also helm (the tests lint, render and install charts/ebb; `make run`
#   does not need it), with --with-kueue Kueue's manager (only the peer benchmark).
# Binaries are cached by version in ${EBB_BIN_CACHE:-~/.cache/ebb/bin}/<part>-<version>/;
# only what is missing is rebuilt. Prints the directory holding every binary
# (one per part) on stdout's last line as PATH fragments when --print-path is given
# (and then says nothing when every part is cached: the caller only wants the path).
# Go's own output (hundreds of "go: downloading" lines) goes to $work/build.log, one
# progress line per part to stderr; --verbose (or EBB_BUILD_VERBOSE=1) shows Go's output.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${EBB_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ebb/bin}
work=${EBB_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ebb/build}
print_path=0
with_kueue=0
with_helm=0
verbose=${EBB_BUILD_VERBOSE:-0}
for arg in "$@"; do
  case "$arg" in
    --print-path) print_path=1 ;;
    --with-kueue) with_kueue=1 ;;
    --with-helm) with_helm=1 ;;
    --verbose) verbose=1 ;;
    *) printf '[build-binaries] unknown argument %s (use --print-path, --with-kueue, --with-helm, --verbose)\n' "$arg" >&2; exit 2 ;;
  esac
done
build_log="$work/build.log"

say() { printf '[build-binaries] %s\n' "$*" >&2; }
die() { printf '[build-binaries] ERROR: %s\n' "$*" >&2; exit 1; }
# Go's output: to the build log, or with --verbose to stderr.
logged() { if [ "$verbose" = 1 ]; then "$@" >&2; else "$@" >>"$build_log" 2>&1; fi; }
# A part's build failed: the end of its output, and where the rest is.
build_failed() {
  [ "$verbose" = 1 ] || { tail -n 25 "$build_log" >&2; set -- "$1 (the last lines of $build_log above)"; }
  die "$1"
}
# One line per part: what it is, how long it took here when measured (2 cores, cold Go
# caches; README), then its time once built.
building() { printf '[build-binaries] %s: building (measured cold on 2 cores: %s)… ' "$1" "$2" >&2; }
built() { printf 'built in %d s\n' "$((SECONDS - $1))" >&2; }

command -v go >/dev/null 2>&1 || die "Go is not installed (need go >= 1.25 on PATH); install it, then run this again."
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
go_version=$(go env GOVERSION)
case "$go_version" in
  go1.2[5-9]*|go1.[3-9][0-9]*) ;;
  *) die "Go $go_version is too old: Kubernetes $KUBERNETES_VERSION needs go >= 1.25." ;;
esac

# Fetch a module; if the checksum database is out of reach, turn it off for these
# builds only (the module proxy itself still serves verified content).
fetch_module() {
  local out
  if out=$(go mod download -json "$1" 2>&1); then
    printf '%s\n' "$out"
    return
  fi
  if grep -qiE 'checksum database|sumdb|verifying' <<<"$out" && [ "${GOSUMDB:-}" != off ]; then
    say "checksum database unreachable; building with GOSUMDB=off"
    export GOSUMDB=off GONOSUMCHECK=1
    out=$(go mod download -json "$1" 2>&1) || die "cannot download $1 through the Go module proxy ($(go env GOPROXY)):
$out"
    printf '%s\n' "$out"
    return
  fi
  die "cannot download $1 through the Go module proxy ($(go env GOPROXY)):
$out"
}

json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n 1; }

have_all() {
  local dir=$1; shift
  local b
  for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

# A throwaway wrapper module whose only purpose is to pin one upstream module.
wrapper_module() {
  local dir=$1 name=$2
  rm -rf "$dir"
  mkdir -p "$dir"
  printf 'module ebb.local/%s\n\ngo 1.25\n' "$name" >"$dir/go.mod"
}

etcd_cached() { have_all "$cache/etcd-$ETCD_VERSION" etcd; }
build_etcd() {
  local out="$cache/etcd-$ETCD_VERSION"
  building "etcd $ETCD_VERSION" "67 s"
  local dir="$work/etcd-$ETCD_VERSION" start=$SECONDS
  fetch_module "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  wrapper_module "$dir" etcd
  (cd "$dir" && logged go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
    logged go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
      -o "$dir/out/etcd" go.etcd.io/etcd/server/v3) || build_failed "etcd build failed"
  mkdir -p "$out" && mv "$dir/out/etcd" "$out/etcd"
  built "$start"
}

kubernetes_bins=(kube-apiserver kube-scheduler kube-controller-manager kubectl)
kubernetes_cached() { have_all "$cache/kubernetes-$KUBERNETES_VERSION" "${kubernetes_bins[@]}"; }
build_kubernetes() {
  local out="$cache/kubernetes-$KUBERNETES_VERSION"
  local bins=("${kubernetes_bins[@]}")
  building "kubernetes $KUBERNETES_VERSION (${bins[*]})" "4 min 35 s"
  local dir="$work/kubernetes-$KUBERNETES_VERSION" start=$SECONDS gomod
  gomod=$(fetch_module "k8s.io/kubernetes@$KUBERNETES_VERSION" | json_field GoMod)
  [ -f "$gomod" ] || die "the module proxy gave no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"
  wrapper_module "$dir" kubernetes
  # k8s.io/kubernetes points every staging module at ./staging/…, which a module
  # consumer cannot see; replace each with its published v0.<minor>.<patch>.
  local staging_version="v0.${KUBERNETES_VERSION#v1.}" mod replaces=()
  while read -r mod; do
    replaces+=("-replace=$mod=$mod@$staging_version")
  done < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  [ "${#replaces[@]}" -gt 10 ] || die "found only ${#replaces[@]} staging modules in $gomod"
  (cd "$dir" && logged go mod edit "${replaces[@]}" && logged go get "k8s.io/kubernetes@$KUBERNETES_VERSION") ||
    build_failed "resolving k8s.io/kubernetes@$KUBERNETES_VERSION failed"
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local v ldflags="-s -w"
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $v.gitVersion=$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor"
    ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z -X $v.gitCommit=$KUBERNETES_VERSION"
  done
  local pkgs=()
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  mkdir -p "$dir/out"
  (cd "$dir" && logged go build -trimpath -ldflags "$ldflags" -o "$dir/out/" "${pkgs[@]}") ||
    build_failed "kubernetes build failed"
  mkdir -p "$out" && for b in "${bins[@]}"; do mv "$dir/out/$b" "$out/$b"; done
  built "$start"
}

kwok_cached() { have_all "$cache/kwok-$KWOK_VERSION" kwok && [ -d "$cache/kwok-$KWOK_VERSION/stages" ]; }
build_kwok() {
  local out="$cache/kwok-$KWOK_VERSION"
  building "kwok $KWOK_VERSION" "86 s"
  local start=$SECONDS dir
  dir=$(fetch_module "sigs.k8s.io/kwok@$KWOK_VERSION" | json_field Dir)
  mkdir -p "$out"
  GOBIN="$out" logged go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" || build_failed "kwok build failed"
  # Keep kwok's shipped stage files beside it, for reference and reuse.
  rm -rf "$out/stages" && mkdir -p "$out/stages" && cp -r "$dir/kustomize/stage/." "$out/stages/" && chmod -R u+w "$out/stages"
  built "$start"
}

helm_cached() { have_all "$cache/helm-$HELM_VERSION" helm; }
build_helm() {
  local out="$cache/helm-$HELM_VERSION"
  building "helm $HELM_VERSION" "17 min with the machine busy"
  local start=$SECONDS
  mkdir -p "$out"
  GOBIN="$out" logged go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" || build_failed "helm build failed"
  built "$start"
}

kueue_cached() { have_all "$cache/kueue-$KUEUE_VERSION" kueue && [ -d "$cache/kueue-$KUEUE_VERSION/crds" ]; }
build_kueue() {
  local out="$cache/kueue-$KUEUE_VERSION"
  building "kueue $KUEUE_VERSION" "not measured"
  local start=$SECONDS dir
  dir=$(fetch_module "sigs.k8s.io/kueue@$KUEUE_VERSION" | json_field Dir)
  mkdir -p "$out"
  GOBIN="$out" logged go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" || build_failed "kueue build failed"
  # Its CRDs come from the same module, so they always match the binary.
  rm -rf "$out/crds" && mkdir -p "$out/crds" &&
    cp "$dir"/config/components/crd/bases/*.yaml "$out/crds/" && chmod -R u+w "$out/crds"
  built "$start"
}

mkdir -p "$cache" "$work"
parts=(etcd kwok kubernetes)
[ "$with_helm" = 1 ] && parts+=(helm)
[ "$with_kueue" = 1 ] && parts+=(kueue)
missing=()
for part in "${parts[@]}"; do "${part}_cached" || missing+=("$part"); done
if [ "${#missing[@]}" = 0 ]; then
  [ "$print_path" = 1 ] || say "control-plane binaries: all cached in $cache"
else
  [ "$verbose" = 1 ] || : >"$build_log"
  estimate="about 7 min for etcd, kwok and kubernetes"
  [[ " ${missing[*]} " == *" helm "* ]] && estimate="$estimate, 17 min for helm on a busy machine"
  say "building ${missing[*]} once (measured cold on 2 cores: $estimate; Go's output: $build_log)"
  for part in "${missing[@]}"; do "build_$part"; done
  say "control-plane binaries ready in $cache"
fi
if [ "$print_path" = 1 ]; then
  path="$cache/etcd-$ETCD_VERSION:$cache/kubernetes-$KUBERNETES_VERSION:$cache/kwok-$KWOK_VERSION:$cache/helm-$HELM_VERSION"
  [ "$with_kueue" = 1 ] && path="$path:$cache/kueue-$KUEUE_VERSION"
  echo "$path"
fi
