/* placeholder until the subsystem lands */
typedef int stratd_registry_placeholder;
