#!/bin/sh
# aws-asg-hook.sh: a sluice `[scale] on_scale` hook that turns sluice's worker count into an
# EC2 Auto Scaling group's desired capacity.
#
#   instances = ceil(SLUICE_DESIRED_WORKERS / WORKERS_PER_INSTANCE)
#
# bounded by MIN_INSTANCES..MAX_INSTANCES and by the group's own MinSize..MaxSize, then
#
#   aws autoscaling set-desired-capacity --auto-scaling-group-name ASG_NAME --desired-capacity N
#
# Install (see docs/scaling.md, "The exec hook"):
#   install -m 0755 contrib/aws-asg-hook.sh /usr/local/lib/sluice/aws-asg-hook.sh
#   install -m 0644 /dev/null /etc/sluice/aws-asg-hook.conf   # then fill it in, see below
#   sluice.ini:  [scale]
#                on_scale = /usr/local/lib/sluice/aws-asg-hook.sh
#                on_scale_timeout = 30s
#
# sluice runs the hook on every up/down decision, never two at once, with exactly these
# environment variables and nothing else (no HOME, no AWS_*): SLUICE_DESIRED_WORKERS,
# SLUICE_CURRENT_WORKERS, SLUICE_REQUIRED_WORKERS, SLUICE_SUPPLY, SLUICE_DECISION (up|down),
# SLUICE_REASON, and PATH (sluice's own). So the settings come from a file, sourced as sh:
#
#   /etc/sluice/aws-asg-hook.conf            (or ASG_HOOK_CONF=/path when run by hand)
#     ASG_NAME=superset-web                  # required: the Auto Scaling group
#     WORKERS_PER_INSTANCE=8                 # required: Gunicorn workers x threads per instance
#                                            #   (= that instance's [backend] workers in sluice)
#     MIN_INSTANCES=2                        # never below (default 1)
#     MAX_INSTANCES=10                       # never above (default: the group's MaxSize)
#     export AWS_REGION=eu-west-1            # required unless the CLI finds a region otherwise
#     # AWS_CLI=/usr/local/bin/aws           # the aws binary if it is not on sluice's PATH
#     # HONOR_COOLDOWN=1                     # let the group's own cooldown veto the change
#     # DRY_RUN=1                            # print the command instead of running it
#
# Credentials: the instance profile (IMDS) of the machine sluice runs on is the usual way; it
# needs autoscaling:DescribeAutoScalingGroups and autoscaling:SetDesiredCapacity on the group.
# (Without HOME the CLI reads no ~/.aws files; `export AWS_PROFILE=... HOME=...` in the conf
# file if you must use them.)
#
# Behaviour:
#   - only SLUICE_DECISION=up or down act; anything else is logged and ignored (exit 0);
#   - idempotent: the group's current DesiredCapacity is read first; if the bounded target is
#     already there, nothing is changed; an "up" never lowers and a "down" never raises the
#     group (someone else may have moved it meanwhile);
#   - logs one line per step to stderr (sluice's error log / the journal), prefixed "aws-asg-hook:";
#   - exit 0 on success or no change, 1 when AWS refused or failed, 2 on bad input or settings.
#
# DRY_RUN=1: the read-only describe call still runs when the CLI is there (so the bounds and
# the no-change test are real); the set-desired-capacity command is printed to stdout, not run.
# Try it by hand:
#   DRY_RUN=1 ASG_NAME=superset-web WORKERS_PER_INSTANCE=8 SLUICE_DECISION=up \
#     SLUICE_DESIRED_WORKERS=30 SLUICE_CURRENT_WORKERS=24 sh contrib/aws-asg-hook.sh
#
# One sluice instance should own the group: if several sluice instances front the same group,
# give the hook to one of them (each of the others sees only its share of the traffic).

set -u

PROG=aws-asg-hook

log() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

die() {
    # die STATUS MESSAGE...
    status=$1
    shift
    log "error: $*"
    exit "$status"
}

# is_count VALUE: a whole number 0..999999 written in decimal digits only.
is_count() {
    case $1 in
        '' | *[!0-9]*) return 1 ;;
    esac
    [ "${#1}" -le 6 ]
}

# Settings from the environment win over the file (that is how a manual run overrides them).
env_asg_name=${ASG_NAME-}
env_wpi=${WORKERS_PER_INSTANCE-}
env_min=${MIN_INSTANCES-}
env_max=${MAX_INSTANCES-}
env_dry=${DRY_RUN-}
env_cli=${AWS_CLI-}
env_honor=${HONOR_COOLDOWN-}

conf=${ASG_HOOK_CONF:-/etc/sluice/aws-asg-hook.conf}
if [ -r "$conf" ]; then
    # shellcheck source=/dev/null
    . "$conf" || die 2 "cannot read $conf"
fi

ASG_NAME=${env_asg_name:-${ASG_NAME-}}
WORKERS_PER_INSTANCE=${env_wpi:-${WORKERS_PER_INSTANCE-}}
MIN_INSTANCES=${env_min:-${MIN_INSTANCES:-1}}
MAX_INSTANCES=${env_max:-${MAX_INSTANCES-}}
DRY_RUN=${env_dry:-${DRY_RUN:-0}}
AWS_CLI=${env_cli:-${AWS_CLI:-aws}}
HONOR_COOLDOWN=${env_honor:-${HONOR_COOLDOWN:-0}}

decision=${SLUICE_DECISION-}
desired=${SLUICE_DESIRED_WORKERS-}
current=${SLUICE_CURRENT_WORKERS-}
reason=${SLUICE_REASON-}

# ---- check what we were given

case $decision in
    up | down) ;;
    *)
        log "decision '${decision}' is not up or down: nothing to do"
        exit 0
        ;;
esac

[ -n "$ASG_NAME" ] || die 2 "ASG_NAME is not set (in $conf or the environment)"
is_count "$desired" || die 2 "SLUICE_DESIRED_WORKERS='${desired}' is not a whole number"
if ! is_count "$WORKERS_PER_INSTANCE" || [ "$WORKERS_PER_INSTANCE" -eq 0 ]; then
    die 2 "WORKERS_PER_INSTANCE='${WORKERS_PER_INSTANCE}' must be a whole number above 0"
fi
is_count "$MIN_INSTANCES" || die 2 "MIN_INSTANCES='${MIN_INSTANCES}' is not a whole number"
if [ -n "$MAX_INSTANCES" ]; then
    is_count "$MAX_INSTANCES" || die 2 "MAX_INSTANCES='${MAX_INSTANCES}' is not a whole number"
    [ "$MAX_INSTANCES" -ge "$MIN_INSTANCES" ] ||
        die 2 "MAX_INSTANCES=$MAX_INSTANCES is below MIN_INSTANCES=$MIN_INSTANCES"
fi

dry=0
case $DRY_RUN in
    1 | yes | true) dry=1 ;;
esac

# ---- the arithmetic: workers -> instances, then the bounds

want=$(((desired + WORKERS_PER_INSTANCE - 1) / WORKERS_PER_INSTANCE))
log "decision=$decision desired_workers=$desired current_workers=${current:-?}" \
    "workers_per_instance=$WORKERS_PER_INSTANCE -> $want instance(s); reason: ${reason:-none}"

# ---- what the group has now (read-only; also run in a dry run when the CLI is there)

have_cli=0
if command -v "$AWS_CLI" >/dev/null 2>&1; then
    have_cli=1
fi

group_desired='' group_min='' group_max=''
if [ "$have_cli" -eq 1 ]; then
    if out=$("$AWS_CLI" autoscaling describe-auto-scaling-groups \
        --auto-scaling-group-names "$ASG_NAME" \
        --query 'AutoScalingGroups[0].[DesiredCapacity,MinSize,MaxSize]' \
        --output text --cli-connect-timeout 5 --cli-read-timeout 10 2>&1); then
        # shellcheck disable=SC2086 # split the three tab-separated fields on purpose
        set -- $out
        if [ "$#" -eq 3 ] && is_count "$1" && is_count "$2" && is_count "$3"; then
            group_desired=$1 group_min=$2 group_max=$3
        elif [ "$dry" -eq 0 ]; then
            die 1 "describe-auto-scaling-groups $ASG_NAME: unexpected answer '$out' (no such group?)"
        else
            log "dry run: describe-auto-scaling-groups answered '$out'; going on without it"
        fi
    elif [ "$dry" -eq 0 ]; then
        die 1 "describe-auto-scaling-groups $ASG_NAME failed: $out"
    else
        log "dry run: describe-auto-scaling-groups failed ($out); going on without it"
    fi
elif [ "$dry" -eq 0 ]; then
    die 1 "the aws CLI ('$AWS_CLI') is not on PATH ($PATH); set AWS_CLI in $conf"
else
    log "dry run: no aws CLI ('$AWS_CLI'): the group's size and bounds are unknown"
fi

target=$want
lo=$MIN_INSTANCES
hi=$MAX_INSTANCES
if [ -n "$group_min" ] && [ "$group_min" -gt "$lo" ]; then
    lo=$group_min
fi
if [ -n "$group_max" ] && { [ -z "$hi" ] || [ "$group_max" -lt "$hi" ]; }; then
    hi=$group_max
fi
if [ -n "$hi" ] && [ "$lo" -gt "$hi" ]; then
    die 2 "no instance count fits: the lowest allowed is $lo, the highest $hi" \
        "(MIN_INSTANCES=$MIN_INSTANCES MAX_INSTANCES=${MAX_INSTANCES:-unset}" \
        "group MinSize=${group_min:-?} MaxSize=${group_max:-?})"
fi
if [ "$target" -lt "$lo" ]; then
    log "bounded: $target -> $lo (the lowest allowed)"
    target=$lo
fi
if [ -n "$hi" ] && [ "$target" -gt "$hi" ]; then
    log "bounded: $target -> $hi (the highest allowed)"
    target=$hi
fi

# ---- idempotence: no change, or a change against the decision, is not made

if [ -n "$group_desired" ]; then
    if [ "$target" -eq "$group_desired" ]; then
        log "$ASG_NAME already wants $group_desired instance(s): no change"
        exit 0
    fi
    if [ "$decision" = up ] && [ "$target" -lt "$group_desired" ]; then
        log "decision is up but $target < the group's $group_desired: left as it is"
        exit 0
    fi
    if [ "$decision" = down ] && [ "$target" -gt "$group_desired" ]; then
        log "decision is down but $target > the group's $group_desired: left as it is"
        exit 0
    fi
fi

# ---- act

cooldown_flag=--no-honor-cooldown
case $HONOR_COOLDOWN in
    1 | yes | true) cooldown_flag=--honor-cooldown ;;
esac

set -- "$AWS_CLI" autoscaling set-desired-capacity \
    --auto-scaling-group-name "$ASG_NAME" --desired-capacity "$target" "$cooldown_flag" \
    --cli-connect-timeout 5 --cli-read-timeout 10

if [ "$dry" -eq 1 ]; then
    log "dry run: not running the command below (${group_desired:-?} -> $target)"
    printf '%s\n' "$*"
    exit 0
fi

if out=$("$@" 2>&1); then
    log "$ASG_NAME: desired capacity ${group_desired:-?} -> $target"
    exit 0
fi
die 1 "set-desired-capacity $ASG_NAME $target failed: $out"
