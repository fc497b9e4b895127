/* bench_true: the trivial program bench_spawn executes (static, exits 0 at once). */
int main(void) { return 0; }
