# scripts/check_lock_safety.sh catches every bad pattern of the fixture and
# passes on the module's sources.

use strict;
use warnings;
use Test::More;

my $script = 'scripts/check_lock_safety.sh';
my $fixture = 't/fixtures/lock_unsafe.c';

my $out = `$script $fixture 2>&1`;
my $rc = $? >> 8;

is($rc, 1, 'the bad fixture fails the check');

my @expected = (
    [12, qr/bad_blocking_lock: blocking lock ngx_shmtx_lock\(\)/],
    [26, qr/bad_query_under_lock: PQsendQuery\(\) inside a critical section/],
    [41, qr/bad_log_and_hash_under_lock: ngx_log_error\(\) inside/],
    [42, qr/bad_log_and_hash_under_lock: crypt_rn\(\) inside/],
    [53, qr/bad_render_locked: yajl_gen_map_open\(\) inside/],
    [60, qr/bad_locked_call_without_lock: calls bad_render_locked\(\) without the lock/],
    [76, qr/bad_alloc_under_lock: ngx_pnalloc\(\) is not allowed inside/],
);

for my $e (@expected) {
    my ($line, $re) = @$e;
    like($out, qr/\Q$fixture\E:$line: .*$re/, "reports line $line");
}

unlike($out, qr/good_copy_under_lock/, 'a memcpy under the lock is fine');
unlike($out, qr/:7[45]: .*PQexec|yajl_gen_free/,
       'calls named in comments are not calls');
like($out, qr/7 violations/, 'exactly the seven violations');

my $src = `$script 2>&1`;
is($? >> 8, 0, 'src/ passes') or diag($src);
like($src, qr/lock safety: \d+ files, [1-9]\d* trylock sections, [1-9]\d* \*_locked functions checked; 0 violations/,
     'src/ reports what it checked');

done_testing();
