/* placeholder until the subsystem lands */
typedef int stratd_runtime_placeholder;
