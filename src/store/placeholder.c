/* placeholder until the subsystem lands */
typedef int stratd_store_placeholder;
