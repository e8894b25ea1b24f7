/* An empty exported C function in its own shared library: the floor the
 * disabled memtrack hook is compared with (same PLT call, same ABI). */
#include <stdint.h>

void bench_empty_hook(uint32_t device_id, uint8_t kind, uint64_t buffer_id, uint64_t address, uint64_t size);

void bench_empty_hook(uint32_t device_id, uint8_t kind, uint64_t buffer_id, uint64_t address, uint64_t size) {
    (void)device_id;
    (void)kind;
    (void)buffer_id;
    (void)address;
    (void)size;
}
