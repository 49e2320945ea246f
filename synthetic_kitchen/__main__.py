from synthetic_kitchen.generate import main

main()
