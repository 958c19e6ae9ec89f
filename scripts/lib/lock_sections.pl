#!/usr/bin/perl
# Finds the critical sections of nginx-style C sources: every span from an
# ngx_shmtx_trylock() to the next ngx_shmtx_unlock() in a function, and the
# whole body of every function whose name ends in "_locked" (it runs with
# the lock held).  Used by scripts/check_lock_safety.sh (mode "check") and
# scripts/audit_lock_patterns.sh (mode "audit").

use strict;
use warnings;

my ($mode, @files) = @ARGV;

# calls that may never happen with the lock held (the issue's deny list)
my $deny = qr/^(?:PQ\w+|pg_\w+|redis\w+|jwt_\w+|crypt\w*|yajl_\w+
              |ngx_http_output_filter|ngx_http_send_header
              |ngx_http_send_special|ngx_http_finalize_request
              |ngx_http_write_filter|ngx_defarm_send\w*|ngx_defarm_error\w*
              |ngx_log_error\w*|ngx_log_debug\w*
              |ngx_shmtx_lock|ngx_rwlock_wlock|ngx_rwlock_rlock)$/x;

# and everything that is not plainly bytes, links or the slab's own memory
my $allow = qr/^(?:ngx_memcpy|ngx_cpymem|ngx_memmove|ngx_memset|ngx_memzero
               |ngx_memcmp|ngx_memn2cmp|ngx_strncmp|ngx_strlen
               |ngx_rbtree_\w+|ngx_rbt_\w+|ngx_queue_\w+
               |ngx_slab_alloc_locked|ngx_slab_calloc_locked
               |ngx_slab_free_locked|ngx_atomic_fetch_add|ngx_atomic_cmp_set
               |ngx_shmtx_unlock|ngx_min|ngx_max
               |\w+_locked|ngx_defarm_cache_node|ngx_defarm_cache_rbnode
               |sizeof|offsetof|if|while|for|switch|return)$/x;

# Functions that hold the lock on purpose, with the reason; printed on
# every run so that the exemption stays in sight.
my %exempt = (
    ngx_defarm_cache_hold =>
        'diagnostic behind defarm_echo: holds the lock from a timer so '
        . 'tests can prove the 503 (never enabled in production)',
);

my ($violations, $sections, $locked_fns, $nfiles) = (0, 0, 0, 0);
my %exempt_seen;
my @audit;

sub violation {
    my ($file, $line, $msg) = @_;
    print "$file:$line: $msg\n" if $mode eq 'check';
    $violations++;
}

for my $file (@files) {
    open my $fh, '<', $file or die "$file: $!";
    my @lines = <$fh>;
    close $fh;
    $nfiles++;

    # blank out comments and string literals, keeping line numbers
    my $text = join '', @lines;
    $text =~ s{/\*.*?\*/}{ my $c = $&; $c =~ s/[^\n]/ /g; $c }gse;
    $text =~ s{"(?:\\.|[^"\\\n])*"}{""}g;
    my @code = split /\n/, $text, -1;

    my ($fn, $in_body, $sec_start) = ('', 0, 0);

    for my $i (0 .. $#code) {
        my $l = $code[$i];
        my $n = $i + 1;

        # nginx style: a definition's name starts at column 0
        if (!$in_body && $l =~ /^(\w+)\(/) {
            $fn = $1;
        }
        if ($l =~ /^\{/) {
            $in_body = 1;
            next;
        }
        if ($l =~ /^\}/) {
            if ($sec_start) {
                violation($file, $sec_start,
                          "$fn: trylock without an unlock in the function");
            }
            if ($fn =~ /_locked$/ && $in_body) {
                push @audit, [$file, $fn, "whole function",
                              $n - $in_body];
            }
            ($in_body, $sec_start) = (0, 0);
            next;
        }
        next unless $in_body;
        $in_body = $n if $in_body == 1 && $fn =~ /_locked$/;

        if ($exempt{$fn}) {
            $exempt_seen{"$file: $fn"} = $exempt{$fn};
            next;
        }

        if ($l =~ /\b(ngx_shmtx_lock|ngx_rwlock_wlock|ngx_rwlock_rlock)\s*\(/)
        {
            violation($file, $n, "$fn: blocking lock $1() (use "
                                 . "ngx_shmtx_trylock and a timer)");
        }

        my $locked = $fn =~ /_locked$/;

        if ($l =~ /\bngx_shmtx_trylock\s*\(/) {
            $sec_start = $n;
            $sections++;
            next;
        }

        my $in_section = $sec_start || $locked;

        for my $call ($l =~ /\b([A-Za-z_]\w*)\s*\(/g) {
            next if $call eq 'ngx_shmtx_trylock';

            if ($call =~ /_locked$/ && $call ne $fn && !$in_section
                && $call !~ /^ngx_slab_\w+_locked$/)
            {
                violation($file, $n, "$fn: calls $call() without the lock");
            }

            next unless $in_section;

            if ($call =~ $deny) {
                violation($file, $n, "$fn: $call() inside a critical section");
            } elsif ($call !~ $allow) {
                violation($file, $n, "$fn: $call() is not allowed inside a "
                                     . "critical section (only copying, "
                                     . "links and slab memory)");
            }
        }

        if ($sec_start && $l =~ /\bngx_shmtx_unlock\s*\(/) {
            push @audit, [$file, $fn, "lines $sec_start-$n",
                          $n - $sec_start + 1];
            $sec_start = 0;
        }
    }

    $locked_fns += grep { /^\w+_locked\(/ } @code;
}

if ($mode eq 'audit') {
    printf "%-40s %-40s %-16s %s\n", 'file', 'function', 'where', 'lines';
    printf "%-40s %-40s %-16s %d\n", @$_ for @audit;
    exit 0;
}

print "exempt: $_ -- $exempt_seen{$_}\n" for sort keys %exempt_seen;

printf "lock safety: %d files, %d trylock sections, %d *_locked functions "
       . "checked; %d violation%s\n", $nfiles, $sections, $locked_fns,
       $violations, $violations == 1 ? '' : 's';

exit($violations ? 1 : 0);
